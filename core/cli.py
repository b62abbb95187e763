"""Command line: `python -m core train|distill|predict|export|runs|...`. Same engine and config as the web UI.

Every TrainConfig field is a flag (`--val-fraction 0.3`), generated from the dataclass so the CLI and the
config cannot drift; `--config run.yaml` loads a file first and flags override it. Errors print one sentence
and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from core.config import TrainConfig, field_meta
from core.engine.callbacks import Callback, FitInfo
from core.errors import ConfigError

ALIASES = {"output_dir": ["--out"], "backbone": ["--model"], "teachers": ["--teacher"]}
TASK_HELP = ("a task of a multi-task run (RUN_DIR is then that run's folder); the same as giving its task folder "
             "RUN_DIR/tasks/TASK")


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a classifier from a folder/zip of labeled images")
    p.add_argument("--config", help="YAML config file; flags given here override its values")
    p.add_argument("--quiet", action="store_true", help="no progress bar (dataset warnings still print)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last finished epoch")
    _config_flags(p)


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


def _distill_parser(sub: argparse._SubParsersAction) -> None:
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


def _field_help(f: dataclasses.Field) -> str:
    """The field's help text and its TrainConfig default, escaped for argparse.

    The flag's argparse default stays None (so a flag overrides --config only when given), which is why the
    default shown is TrainConfig's, written here once. argparse %-formats help texts: a literal % is doubled.
    """
    text = f.metadata["help"] + (f" (default: {f.default})" if f.default not in ("", ()) else "")
    return text.replace("%", "%%")


def build_config(args: argparse.Namespace) -> TrainConfig:
    base = TrainConfig.load(args.config).to_dict() if args.config else {}
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name) is not None}
    return TrainConfig.from_dict({**base, **flags})


def show_progress(phase: str, done: int, total: int) -> None:
    """The progress of a long phase, one line on stderr redrawn in place (every command shows it this way)."""
    sys.stderr.write(f"\r{phase}: {done}/{total}   ")


def cmd_train(args: argparse.Namespace) -> int:
    from core.engine.train import train
    from core.runs import RunDir
    callbacks = [DatasetWarnings()] if args.quiet else [ProgressBar(), DatasetWarnings()]  # warnings after the bar
    if args.resume:
        run = RunDir(Path(args.resume))
        if not run.config.exists():
            raise FileNotFoundError(f"{args.resume} is not a run folder (no config.yaml).")
        result = train(TrainConfig.load(run.config), callbacks, run=run, resume=True)
    else:
        cfg = build_config(args)
        if not cfg.data:
            raise ConfigError("No dataset given: pass --data <folder or .zip> (or --tasks with two or more datasets) "
                              "or set data: in the config file.")
        _check_data_is_first_task(args.data, cfg)
        notes: list[str] = []
        if cfg.freeze == "auto":  # the advisor looks at the data and chooses; its reasons go with the run
            advice = advise_from_cli(cfg, quiet=args.quiet)
            cfg, notes = advice.config, advice.reasons
        result = train(cfg, callbacks, notes=notes)
    from core.engine.distributed import is_main_process
    if not is_main_process():  # torchrun: rank 0 reports (and wrote the run folder)
        return 0
    print_summary(result.run_dir, result.summary)
    return 0 if result.status in ("completed", "stopped") else 1


def _check_data_is_first_task(data: str | None, cfg: TrainConfig) -> None:
    """--tasks listing datasets makes data the first of them; a different --data given with it is a mistake."""
    from core.config import task_datasets
    pairs = task_datasets(cfg.tasks) if cfg.tasks else []
    if data and pairs and Path(data).expanduser().resolve() != Path(pairs[0][1]).expanduser().resolve():
        raise ConfigError(f"--data {data} is not the first dataset of --tasks ({pairs[0][1]}): with datasets as "
                          f"tasks, the first of them is the dataset; leave --data out.")


def cmd_distill(args: argparse.Namespace) -> int:
    """Train the distilled student, then (unless --no-baseline) the same student on the labels alone, then the
    side-by-side table; each step is an ordinary run, so --resume picks up at the step a kill interrupted."""
    from core.engine.distillation import baseline_config, link_baseline, linked_baseline, make_table
    from core.engine.train import train
    from core.export.compare import to_markdown
    from core.runs import RunDir, Status, create_run_dir
    callbacks = [DatasetWarnings()] if args.quiet else [ProgressBar(), DatasetWarnings()]
    if args.resume:
        student = RunDir(Path(args.resume))
        if not student.config.exists():
            raise FileNotFoundError(f"{args.resume} is not a run folder (no config.yaml).")
        cfg = TrainConfig.load(student.config)
        if not cfg.teachers:
            raise ConfigError(f"{args.resume} is not a distilled run (its config names no teachers); resume it "
                              f"with `train --resume`.")
        result = _run_step(train, cfg, callbacks, student)
    else:
        cfg = build_config(args)
        if not cfg.data:
            raise ConfigError("No dataset given: pass --data <folder or .zip> or set data: in the config file.")
        if not cfg.teachers:
            raise ConfigError("No teacher given: pass --teacher <finished run folder or bundle> (repeat it for an "
                              "ensemble).")
        notes: list[str] = []
        if cfg.freeze == "auto":
            advice = advise_from_cli(cfg, quiet=args.quiet)
            cfg, notes = advice.config, advice.reasons
        student = create_run_dir(cfg.output_dir)
        result = train(cfg, callbacks, run=student, notes=notes)
    print_summary(result.run_dir, result.summary)
    if result.status != Status.COMPLETED:
        return 0 if result.status == Status.STOPPED else 1
    base = linked_baseline(student)
    if args.baseline or base is not None:
        if base is None:
            base = create_run_dir(cfg.output_dir)
            link_baseline(student, base)
            sys.stderr.write(f"\nlabels-only baseline (same student and settings, no teachers): {base.path}\n")
            result = train(baseline_config(cfg), callbacks, run=base)
        else:
            result = _run_step(train, baseline_config(cfg), callbacks, base)
        print_summary(result.run_dir, result.summary)
        if result.status != Status.COMPLETED:
            return 0 if result.status == Status.STOPPED else 1
    rows = make_table(student, progress=None if args.quiet else show_progress)
    sys.stderr.write("\n")
    print("\n" + to_markdown(rows) + f"table: {student.path / 'distill' / 'table.md'}")
    return 0


def _run_step(train, cfg: TrainConfig, callbacks, run):
    """A run of a distillation on --resume: resumed when interrupted, read back when it already finished."""
    from core.engine.callbacks import FitResult
    from core.runs import Status
    summary = run.read_summary()
    if summary is not None and summary.status == Status.COMPLETED and (run.bundle_dir / "model.safetensors").exists():
        return FitResult(summary.status, str(run.path), summary)
    if not run.config.exists():
        cfg.save(run.config)
    return train(cfg, callbacks, run=run, resume=True)


def print_summary(run_dir: str, s) -> None:
    print(f"\nrun: {run_dir}")
    print(f"status: {s.status}")
    if s.note:
        print(s.note)
    for note in s.notes:
        print(f"note: {note}")
    for name, report in (("val", s.val), ("test", s.test)):
        if report is None:
            continue
        print(f"{name}_accuracy: {report.accuracy:.4f}  macro_f1: {report.macro_f1:.4f}  n={report.num}")
        for c, m in report.per_class.items():
            print(f"  {c:<20} precision {m['precision']:.3f}  recall {m['recall']:.3f}  f1 {m['f1']:.3f}  "
                  f"n={m['support']}")
    for task, t in (s.tasks or {}).items():  # multi-task runs: every task's scores and its own bundle
        print(f"task {task}: " + "  ".join(f"{split}_accuracy {t[split]['accuracy']:.4f} macro_f1 "
                                           f"{t[split]['macro_f1']:.4f} n={t[split]['num']}"
                                           for split in ("val", "test") if t.get(split))
              + f"  bundle: {Path(run_dir) / 'tasks' / task / 'bundle'}")
    if s.has_results and s.tasks:
        print(f"best_epoch: {s.best_epoch} of {s.epochs_run}  train_seconds: {s.train_seconds:.1f}")
        print(f"multi-output model: {Path(run_dir) / 'multitask.torchscript.pt'}")
        print(f"each task as a run of its own: {Path(run_dir) / 'tasks'}/<task>/ (or --task NAME with runs, "
              f"predict, export, inspect)")
        return
    if s.has_results:
        print(f"best_epoch: {s.best_epoch} of {s.epochs_run}  train_seconds: {s.train_seconds:.1f}")
        print(f"bundle: {Path(run_dir) / 'bundle'}")


def advise_from_cli(cfg: TrainConfig, quiet: bool = False, rank_all: bool = False):
    """The advisor's settings for cfg, printing what it looked at and why it chose them (ranking every offline
    backbone only for `plan`: training needs the chosen one's score alone)."""
    from core.data.multitask import single_task_view
    from core.plan.advisor import advise
    ds = single_task_view(cfg)  # the class folders; multi-task: the images labeled for the first task
    show = None if quiet else show_progress
    advice = advise(cfg, ds, progress=show, rank_all=rank_all)
    sys.stderr.write(("" if quiet else "\n") + "advisor: " + advice.paragraph + "\n")
    return advice


def cmd_plan(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    cfg = TrainConfig(data=args.data, budget_min=args.budget_min, **({"backbone": args.backbone} if args.backbone
                                                                    else {}))
    advice = advise_from_cli(cfg, quiet=args.json, rank_all=True)
    if args.json:
        print(json.dumps({"ranking": [dataclasses.asdict(r) for r in advice.ranking],
                          "settings": {k: v for k, v in advice.config.to_dict().items()
                                       if v != getattr(cfg, k) or k in ("freeze", "epochs", "img_size")},
                          "reasons": advice.reasons, "estimate": dataclasses.asdict(advice.estimate),
                          "seconds": round(time.perf_counter() - t0, 1)}, indent=2))
        return 0
    print(f"{'backbone':<24}{'params':>8}{'input':>7}{'probe accuracy (5-fold)':>25}")
    for r in advice.ranking:
        print(f"{r.backbone:<24}{r.params_m:>7.1f}M{r.input_size:>6}px{r.probe_accuracy:>24.1%}")
    c = advice.config
    print(f"\nchosen: freeze {c.freeze}, backbone {c.backbone}, img_size {c.img_size or 'native'}, epochs {c.epochs}, "
          f"lr {c.lr:g}\nestimate: {advice.estimate.describe()}\nplanned in {time.perf_counter() - t0:.1f} s")
    print(f"train it: python -m core train --data {args.data} --freeze {c.freeze} --epochs {c.epochs}"
          + (f" --img-size {c.img_size}" if c.img_size else "") + (f" --lr {c.lr:g}" if c.lr != cfg.lr else ""))
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from core.models.backbones import CATALOGUE
    from core.plan.latency import catalogue_rows, measure_latency
    if args.measure:
        names = tuple(b.name for b in CATALOGUE if args.all or "bundled" in b.weight_sources)
        measure_latency(names, progress=show_progress)
        sys.stderr.write("\n")
    rows = catalogue_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'backbone':<24}{'params':>8}{'input':>7}{'offline':>9}{'CPU ms/image':>14}")
    for r in rows:
        ms = f"{r['CPU ms/image']:.1f}" if r["CPU ms/image"] is not None else "-"
        print(f"{r['backbone']:<24}{r['params (M)']:>7.1f}M{r['input (px)']:>5}px{'yes' if r['offline'] else 'no':>9}"
              f"{ms:>14}")
    if not any(r["CPU ms/image"] for r in rows):
        print("\nCPU latency not measured on this machine yet: python -m core backbones --measure")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from core.data.dataset import extract_dir_for, open_dataset
    from core.plan.lr_finder import find_lr
    cfg = (TrainConfig.load(args.config) if args.config else TrainConfig()).replace(data=args.data)
    ds = open_dataset(cfg.data, cfg.val_fraction, cfg.seed, extract_dir_for(cfg.output_dir))
    found = find_lr(cfg, ds, progress=None if args.json else show_progress)
    if args.json:
        print(json.dumps(dataclasses.asdict(found)))
    else:
        print(f"\n{found.describe()}\nuse it: python -m core train --data {args.data} --lr {found.suggestion:.1e}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from core.data.dataset import IMG_EXTENSIONS
    from core.export.bundle import load_bundle
    paths: list[Path] = []
    for item in map(Path, args.images):
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
        elif item.is_file():
            paths.append(item)
        else:
            raise FileNotFoundError(f"{item} does not exist.")
    if not paths:
        raise ValueError("No image files found in what was given.")
    model = load_bundle(_bundle_path(Path(args.bundle), args.task))
    for p, top in zip(paths, model.predict(paths, topk=args.topk), strict=True):
        if args.json:
            print(json.dumps({"path": str(p), "top": [{"class": c, "prob": round(v, 5)} for c, v in top]}))
        else:
            print(f"{p}: " + ", ".join(f"{c} {v:.3f}" for c, v in top))
    return 0


def _run_or_task(run_dir: str, task: str | None):
    """The run folder given, or with --task the task view of that multi-task run (<run>/tasks/<task>/)."""
    from core.runs import RunDir
    run = RunDir(Path(run_dir))
    if not run.config.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml).")
    return run.task_view(task) if task else run


def _is_multitask(run) -> bool:
    return not run.task and bool((s := run.read_summary()) and s.tasks)


def _bundle_path(path: Path, task: str | None) -> Path:
    """What predict loads: a bundle folder or zip as given, a run folder's bundle/, or --task's bundle of a
    multi-task run folder."""
    if not task and ((path / "config.json").is_file() or not (path / "config.yaml").is_file()):
        return path  # a bundle (it holds config.json, timm's), a zip, or what load_bundle will refuse clearly
    run = _run_or_task(str(path), task)
    if _is_multitask(run):
        raise ValueError(f"{path} is a multi-task run: give the task to predict with --task "
                         f"({', '.join(v.task for v in run.task_views())}).")
    return run.bundle_dir


def cmd_export(args: argparse.Namespace) -> int:
    from core.export.bundle import export_zip
    run = _run_or_task(args.run_dir, args.task)
    if _is_multitask(run):
        return _export_multitask(run, args)
    if args.format != "bundle":
        return _export_checked(run, args)
    out = export_zip(run)
    if args.out:
        target = Path(args.out) / out.name if Path(args.out).is_dir() else Path(args.out)
        out = out.replace(target)
    print(out)
    return 0


def _export_multitask(run, args: argparse.Namespace) -> int:
    """A multi-task run as a whole: its multi-output ONNX (checked) or TorchScript file; a bundle is per task."""
    from core.export.multitask import FILE
    from core.export.multitask_onnx import export_file, export_multitask_run
    tasks = ", ".join(v.task for v in run.task_views())
    if args.format == "bundle":
        raise ValueError(f"Run {run.run_id} is a multi-task run: each task has its own bundle; give --task "
                         f"({tasks}), or --format onnx | onnx-int8 | torchscript for one file with every task.")
    if args.format == "torchscript":
        return _deliver(run.path / FILE, None, args.out)
    check = export_multitask_run(run, args.format, progress=show_progress)
    sys.stderr.write("\n")
    return _deliver(export_file(run, args.format), check, args.out)


def _export_checked(run, args: argparse.Namespace) -> int:
    """ONNX / int8 / TorchScript: export, check on the validation images, print the figures; exit 1 if it failed."""
    from core.export.artifacts import export_run
    from core.export.parity import export_file
    check = export_run(run, args.format, progress=show_progress)
    sys.stderr.write("\n")
    return _deliver(export_file(run, args.format), check, args.out)


def _deliver(out: Path, check, dest: str | None) -> int:
    """Copy an exported file to --out (a folder or a file name), print its check and path; exit 1 if it failed."""
    import shutil
    if dest:
        target = Path(dest) / out.name if Path(dest).is_dir() else Path(dest)
        out = Path(shutil.copyfile(out, target))
    if check is not None:
        print(f"{'check passed' if check.passed else 'CHECK FAILED: ' + check.reason}: {check.summary_line()}")
    print(out)
    return 0 if check is None or check.passed else 1


def cmd_adapt(args: argparse.Namespace) -> int:
    """Self-supervised adaptation into an adapted-weights run; prints the probe before/after and the weights file."""
    from core.engine.adapt import adapt
    flags = {"data": args.data, "unlabeled": args.unlabeled, "adapt_objective": args.objective,
             "adapt_from": args.start, "adapt_epochs": args.epochs, "output_dir": args.out,
             "backbone": args.backbone, "weights": args.weights, "img_size": args.img_size,
             "batch_size": args.batch_size, "lr": args.lr}
    base = TrainConfig.load(args.config).to_dict() if args.config else {}
    cfg = TrainConfig.from_dict({**base, **{k: v for k, v in flags.items() if v is not None}})
    result = adapt(cfg, [] if args.quiet else [ProgressBar()])
    info = result.adaptation
    sys.stderr.write("\n")
    print(f"run: {result.run_dir}\nstatus: {result.status}")
    if info.get("probe_before") is not None:
        after = f"{info['probe_after']:.4f}" if info.get("probe_after") is not None else "-"
        print(f"probe_accuracy_before: {info['probe_before']:.4f}  after: {after}  "
              f"({info['probe_images']} labeled images, 5-fold linear probe)")
    print(f"loss per epoch: {', '.join(f'{v:.4f}' for v in info.get('loss_per_epoch', []))}")
    if result.weights:
        print(f"weights: {result.weights}\ntrain from them: python -m core train --data {args.data} "
              f"--backbone {cfg.backbone} --weights {result.weights}" + (f" --img-size {cfg.img_size}"
                                                                          if cfg.img_size else ""))
    return 0 if result.status in ("completed", "stopped") else 1


def cmd_runs(args: argparse.Namespace) -> int:
    from core.runs import list_runs
    for run in list_runs(args.out, task_views=True):
        s = run.read_summary()
        acc = f"{s.val_accuracy:.3f}" if s and s.has_results else "-"
        test = f"  test_acc {s.test.accuracy:.3f}" if s and s.test else ""
        if run.task:  # a task of the multi-task run above: address it with --task or this folder
            print(f"  task {run.task:<16}  val_acc {acc}{test}  {run.path}")
            continue
        tasks = "".join(f"  {k}_acc {t['val']['accuracy']:.3f}" for k, t in (s.tasks or {}).items() if t.get("val")) \
            if s else ""
        print(f"{run.run_id}  {run.read_status()['status']:<11}  val_acc {acc}{test}{tasks}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Write every report under <run>/inspect/ (JSON, and PNG for heat-maps and the reliability diagram)."""
    from core.analysis.inspect import inspect_run, read_report
    run = _run_or_task(args.run_dir, args.task)
    if _is_multitask(run):
        raise ValueError(f"Run {run.run_id} is a multi-task run: inspect one task with --task "
                         f"({', '.join(v.task for v in run.task_views())}).")
    index = inspect_run(run, progress=show_progress,
                        saliency_images=args.saliency)
    sys.stderr.write("\n")
    c = read_report(run, "calibration.json")
    print(f"calibration: T = {c['temperature']:.3f}, validation ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f} "
          f"on {c['num']} images" + (f" ({c['warning']})" if c["warning"] else ""))
    if (mis := read_report(run, "mislabels.json")) is not None:
        print(f"mislabels: {sum(m['flagged'] for m in mis)} of {len(mis)} training images flagged; worst: "
              + ", ".join(f"{m['path']} ({m['given']} -> {m['suggested']})" for m in mis[:3]))
    if (dup := read_report(run, "duplicates.json")) is not None:
        s = dup["summary"]
        print(f"duplicates: {s['exact_groups']} exact and {s['near_groups']} near-duplicate groups; "
              f"{s['leaked_val']} validation image(s) have a copy in train")
    if not index["dataset_found"]:
        print("note: the dataset is not where the run found it; training-image reports were skipped")
    print(f"reports: {run.path / 'inspect'}")
    return 0


class DatasetWarnings(Callback):
    """Prints what the Data page warns about when training starts: dataset warnings and skipped files.

    Installed with --quiet too: a class folder left out for want of usable images changes what the model
    learns, so it is not progress a person may choose not to see.
    """

    def __init__(self, limit: int = 10):
        self.limit = limit

    def on_fit_start(self, info: FitInfo) -> None:
        lines = [f"warning: {w}" for w in info.warnings] + _skipped_lines(info.skipped, self.limit)
        if lines:
            sys.stderr.write("\n".join(lines) + "\n")


def _skipped_lines(skipped: list[dict], limit: int) -> list[str]:
    """'skipped N file(s):' then one 'folder/file: reason' line each, at most `limit` of them."""
    if not skipped:
        return []
    lines = [f"skipped {len(skipped)} file(s):"]
    lines += [f"  {Path(s['path']).parent.name}/{Path(s['path']).name}: {s['reason']}" for s in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  and {len(skipped) - limit} more")
    return lines


class ProgressBar(Callback):
    """A one-line text progress bar on stderr (engine callback)."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.phase_line_open = False  # a phase line is redrawn with \r and has no newline yet

    def on_fit_start(self, info: FitInfo) -> None:
        # end a probe's "computing features" line first, so this line and the warnings after it start clean
        start = "\n" if self.phase_line_open else ""
        sys.stderr.write(f"{start}{info.mode}: {info.trainable_params:,} of {info.total_params:,} parameters "
                         f"trainable, {sum(info.counts['train'].values())} train / "
                         f"{sum(info.counts['val'].values())} val images, {info.device}\n")
        self.phase_line_open = False

    def on_phase(self, phase: str, done: int, total: int) -> None:
        show_progress(phase, done, total)
        self.phase_line_open = True

    def on_batch_end(self, m) -> None:
        width = 24
        frac = m.step / m.steps_per_epoch
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        sys.stderr.write(f"\repoch {m.epoch} [{bar}] loss {m.loss:.3f}  {m.images_per_sec:.0f} img/s  "
                         f"ETA {m.eta:.0f}s   ")

    def on_epoch_end(self, m) -> None:
        tasks = "".join(f" {k} {t['val_acc']:.3f}" for k, t in (m.tasks or {}).items())  # multi-task: each task
        sys.stderr.write(f"\repoch {m.epoch}: train loss {m.train_loss:.3f} acc {m.train_acc:.3f} | val loss "
                         f"{m.val_loss:.3f} acc {m.val_acc:.3f}{' |' + tasks if tasks else ''} | {m.seconds:.1f}s"
                         f"{' ' * 20}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _distill_parser(sub)
    p = sub.add_parser("predict", help="top-k classes for images with an exported bundle")
    p.add_argument("bundle", help="bundle folder or .zip, or a run folder (its bundle/)")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--task", default=None, help=TASK_HELP.replace("RUN_DIR", "BUNDLE"))
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = sub.add_parser("export", help="zip a run's bundle, or export it to ONNX / int8 ONNX / TorchScript, checked")
    p.add_argument("run_dir")
    p.add_argument("--out", help="where to put the zip or the exported file (file or folder)")
    p.add_argument("--format", default="bundle", choices=("bundle", "onnx", "onnx-int8", "torchscript"),
                   help="bundle = timm / Hugging Face folder (zip); the others are checked on the validation images. "
                        "For a multi-task run without --task: onnx / onnx-int8 = one file with an output per task "
                        "(checked on every task), torchscript = its multi-output TorchScript file")
    p.add_argument("--task", default=None, help=TASK_HELP)
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
    p = sub.add_parser("runs", help="list runs (a multi-task run's tasks indented below it, with their folders)")
    p.add_argument("--out", default="runs", help="runs folder")
    p = sub.add_parser("inspect", help="calibration, top losses, mislabels, duplicates, saliency, embedding map")
    p.add_argument("run_dir")
    p.add_argument("--saliency", type=int, default=8, help="heat-maps for this many highest-loss val images")
    p.add_argument("--task", default=None, help=TASK_HELP)
    args = parser.parse_args(argv)
    handler = {"train": cmd_train, "predict": cmd_predict, "export": cmd_export, "runs": cmd_runs, "plan": cmd_plan,
               "lr-find": cmd_lr_find, "inspect": cmd_inspect, "backbones": cmd_backbones,
               "adapt": cmd_adapt, "distill": cmd_distill}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:  # all our errors are phrased for the user
        print(f"error: {exc}", file=sys.stderr)
        return 2
