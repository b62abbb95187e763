"""`python -m core predict` and `export`: use a trained model on images, or deliver it as a zip or as an ONNX /
int8 ONNX / TorchScript file checked against the run's own predictions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.cli.console import show_progress
from core.cli.reports import is_multitask, one_task, run_or_task


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
    if model.unknown is None and not args.json:
        sys.stderr.write("This bundle has no unknown-input score (made before it existed, or a multi-task run's "
                         "task): every image gets its closest class.\n")
    for p, got in zip(paths, model.assess(paths, topk=args.topk, threshold=args.unknown_threshold), strict=True):
        score = None if got.unknown_score is None else round(got.unknown_score, 5)
        if args.json:
            print(json.dumps({"path": str(p), "top": [{"class": c, "prob": round(v, 5)} for c, v in got.top],
                              "unknown": got.unknown, "unknown_score": score}))
        else:
            verdict = f"none of these (unknown score {score:.3g}); closest: " if got.unknown else ""
            print(f"{p}: {verdict}" + ", ".join(f"{c} {v:.3f}" for c, v in got.top))
    return 0


def _bundle_path(path: Path, task: str | None) -> Path:
    """What predict loads: a bundle folder or zip as given, a run folder's bundle/, or --task's bundle of a
    multi-task run folder."""
    if not task and ((path / "config.json").is_file() or not (path / "config.yaml").is_file()):
        return path  # a bundle (it holds config.json, timm's), a zip, or what load_bundle will refuse clearly
    return one_task(str(path), task, "predict with").bundle_dir


def cmd_export(args: argparse.Namespace) -> int:
    from core.export.bundle import export_zip
    run = run_or_task(args.run_dir, args.task)
    if is_multitask(run):
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
