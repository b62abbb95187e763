"""The command line's arguments: one parser per command, every TrainConfig field a flag of train and distill.

The config flags are generated from the dataclass and its field metadata (help, choices, default), so the CLI
and the config cannot drift; `--config run.yaml` loads a file first and the flags given override it.
"""

from __future__ import annotations

import argparse
import dataclasses

from core.config import TrainConfig, field_meta

ALIASES = {"output_dir": ["--out"], "backbone": ["--model"], "teachers": ["--teacher"]}
TASK_HELP = ("a task of a multi-task run (RUN_DIR is then that run's folder); the same as giving its task folder "
             "RUN_DIR/tasks/TASK")


def build_parser(description: str) -> argparse.ArgumentParser:
    """`python -m core` and its subcommands (the command name is args.command)."""
    parser = argparse.ArgumentParser(prog="python -m core", description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    train_parser(sub)
    distill_parser(sub)
    _delivery_parsers(sub)
    _planning_parsers(sub)
    _adapt_parser(sub)
    _report_parsers(sub)
    return parser


def train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a classifier from a folder/zip of labeled images")
    p.add_argument("--config", help="YAML config file; flags given here override its values")
    p.add_argument("--quiet", action="store_true", help="no progress bar (dataset warnings still print)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last finished epoch")
    _config_flags(p)


def distill_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="knowledge distillation: finished runs (--teacher) teach a new student "
                                       "(--student BACKBONE); prints a table against the same student trained on "
                                       "labels alone")
    p.add_argument("--config", help="YAML config file; flags given here override its values")
    p.add_argument("--quiet", action="store_true", help="no progress bar (dataset warnings still print)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted distillation (the student run's "
                                                       "folder): the student, then its baseline, then the table")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the labels-only baseline (halves the time; the table then cannot show whether "
                        "distilling helped)")
    _config_flags(p, {"backbone": ["--student"]})


def _config_flags(p: argparse.ArgumentParser, aliases: dict[str, list[str]] | None = None) -> None:
    """One flag per TrainConfig field; a list field (teachers) is a repeatable flag."""
    for f in dataclasses.fields(TrainConfig):
        flags = [f"--{f.name.replace('_', '-')}", *ALIASES.get(f.name, []), *(aliases or {}).get(f.name, [])]
        if f.type.startswith("tuple"):
            p.add_argument(*flags, dest=f.name, action="append", default=None, metavar="PATH", help=_field_help(f)
                           + " Repeat the flag for several.")
            continue
        kind = {"int": int, "float": float}.get(f.type, str)
        p.add_argument(*flags, dest=f.name, type=kind, default=None, choices=f.metadata.get("choices"),
                       help=_field_help(f))


def _field_help(f: dataclasses.Field) -> str:
    """The field's help text and its TrainConfig default, escaped for argparse.

    The flag's argparse default stays None (so a flag overrides --config only when given), which is why the
    default shown is TrainConfig's, written here once. argparse %-formats help texts: a literal % is doubled.
    """
    text = f.metadata["help"] + (f" (default: {f.default})" if f.default not in ("", ()) else "")
    return text.replace("%", "%%")


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The config of a train or distill command: its --config file, then the flags given over it."""
    base = TrainConfig.load(args.config).to_dict() if args.config else {}
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name) is not None}
    return TrainConfig.from_dict({**base, **flags})


def _delivery_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top-k classes for images with an exported bundle")
    p.add_argument("bundle", help="bundle folder or .zip, or a run folder (its bundle/)")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--task", default=None, help=TASK_HELP.replace("RUN_DIR", "BUNDLE"))
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--unknown-threshold", type=float, default=None,
                   help="flag an image as unlike the training images above this unknown score (default: the "
                        "bundle's own, which accepts 95%% of its validation images)")
    p = sub.add_parser("export", help="zip a run's bundle, or export it to ONNX / int8 ONNX / TorchScript, checked")
    p.add_argument("run_dir")
    p.add_argument("--out", help="where to put the zip or the exported file (file or folder)")
    p.add_argument("--format", default="bundle", choices=("bundle", "onnx", "onnx-int8", "torchscript"),
                   help="bundle = timm / Hugging Face folder (zip); the others are checked on the validation images. "
                        "For a multi-task run without --task: onnx / onnx-int8 = one file with an output per task "
                        "(checked on every task), torchscript = its multi-output TorchScript file")
    p.add_argument("--task", default=None, help=TASK_HELP)


def _planning_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="look at a dataset: rank the offline backbones, choose settings, estimate time")
    p.add_argument("data", help="dataset folder or .zip")
    p.add_argument("--budget-min", type=float, default=0.0, help="about how many minutes training may take")
    p.add_argument("--backbone", default=None, help="the backbone to plan for (default: the config's)")
    p.add_argument("--json", action="store_true", help="the ranking, settings, reasons and estimate as JSON")
    p = sub.add_parser("backbones", help="the catalogue: parameters, input size, offline or not, CPU latency here")
    p.add_argument("--measure", action="store_true", help="time each backbone on this CPU (ONNX Runtime, batch 1)")
    p.add_argument("--all", action="store_true", help="with --measure: the download-only backbones too")
    p.add_argument("--json", action="store_true", help="the table as JSON")
    p = sub.add_parser("lr-find", help="learning-rate range test: sweep, plot data and a suggested rate")
    p.add_argument("--data", required=True, help="dataset folder or .zip")
    p.add_argument("--config", help="YAML config file (backbone, freezing, batch size ...)")
    p.add_argument("--json", action="store_true", help="the sweep (learning rates, smoothed losses) as JSON")


def _adapt_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adapt", help="self-supervised adaptation of the backbone on unlabeled images (+ the "
                                     "training images): an adapted-weights run that train --weights starts from")
    p.add_argument("--data", required=True, help="the labeled dataset (its training images join the pool; the "
                                                 "probe before/after is measured on it)")
    p.add_argument("--unlabeled", default=None, help=field_meta("unlabeled")["help"])
    p.add_argument("--objective", required=True, choices=("simsiam", "reconstruct"),
                   help=field_meta("adapt_objective")["help"])
    p.add_argument("--from", dest="start", default=None, choices=field_meta("adapt_from")["choices"],
                   help=field_meta("adapt_from")["help"])
    p.add_argument("--epochs", type=int, default=None, help=field_meta("adapt_epochs")["help"])
    p.add_argument("--out", default=None, help="runs folder (default: runs)")
    p.add_argument("--config", help="YAML config file (backbone, weights, image size, batch size, lr ...)")
    p.add_argument("--backbone", "--model", default=None, help=field_meta("backbone")["help"])
    p.add_argument("--weights", default=None, help=field_meta("weights")["help"])
    p.add_argument("--img-size", type=int, default=None, help=field_meta("img_size")["help"])
    p.add_argument("--batch-size", type=int, default=None, help=field_meta("batch_size")["help"])
    p.add_argument("--lr", type=float, default=None, help=field_meta("lr")["help"])
    p.add_argument("--quiet", action="store_true", help="no progress line")


def _report_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list runs (a multi-task run's tasks indented below it, with their folders)")
    p.add_argument("--out", default="runs", help="runs folder")
    p = sub.add_parser("inspect", help="calibration, top losses, mislabels, duplicates, saliency, embedding map")
    p.add_argument("run_dir")
    p.add_argument("--saliency", type=int, default=8, help="heat-maps for this many highest-loss val images")
    p.add_argument("--task", default=None, help=TASK_HELP)
    p = sub.add_parser("suggest", help="rank unlabeled pool images by how much their labels would help the run's "
                                       "model (active learning on cached features)")
    p.add_argument("run_dir")
    p.add_argument("--pool", required=True, help="folder (any layout) or .zip of unlabeled images")
    p.add_argument("--k", type=int, default=20, help="how many images to pick (the rest follow, least sure first)")
    p.add_argument("--method", default=None,
                   help="margin / entropy (uncertainty), coreset (k-center), typiclust (tiny budgets), mix / badge "
                        "(uncertainty + diversity); default: the one the label-savings bench chose")
    p.add_argument("--task", default=None, help=TASK_HELP)
    p.add_argument("--json", action="store_true", help="one JSON object per pool image, in rank order")
