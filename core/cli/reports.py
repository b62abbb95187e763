"""`python -m core runs` and `inspect`: the runs of a folder, and the reports written about one run; with the
helpers that find a run (or one task of a multi-task run) from the folder a person gives."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli.console import show_progress


def run_or_task(run_dir: str, task: str | None):
    """The run folder given, or with --task the task view of that multi-task run (<run>/tasks/<task>/)."""
    from core.runs import RunDir
    run = RunDir(Path(run_dir))
    if not run.config.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml).")
    return run.task_view(task) if task else run


def is_multitask(run) -> bool:
    return not run.task and bool((s := run.read_summary()) and s.tasks)


def one_task(run_dir: str, task: str | None, action: str):
    """run_or_task, refusing a multi-task run as a whole: to `action` ("inspect", "predict", ...) takes one task."""
    run = run_or_task(run_dir, task)
    if is_multitask(run):
        raise ValueError(f"Run {run.run_id} is a multi-task run: {action} one task at a time; give it with --task "
                         f"({', '.join(v.task for v in run.task_views())}).")
    return run


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
    run = one_task(args.run_dir, args.task, "inspect")
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


def cmd_suggest(args: argparse.Namespace) -> int:
    """The pool's images in the order to label them: the k picks first, then the rest (least sure first)."""
    import json

    from core.analysis.suggest import DEFAULT_METHOD, suggest_for_run
    from core.data.dataset import extract_dir_for
    run = one_task(args.run_dir, args.task, "suggest for")
    if args.k < 1:
        raise ValueError("--k must be at least 1.")
    rows = suggest_for_run(run.path, args.pool, args.k, args.method or DEFAULT_METHOD,
                           extract_dir_for(run.path.parent), progress=None if args.json else show_progress)
    if args.json:
        for r in rows:
            print(json.dumps({"path": r.path, "score": round(r.score, 6), "picked": r.picked,
                              "predicted": r.predicted, "confidence": round(r.confidence, 4), "unknown": r.unknown,
                              "unknown_score": None if r.unknown_score is None else round(r.unknown_score, 6)}))
        return 0
    sys.stderr.write("\n")
    for n, r in enumerate(rows[:args.k], 1):
        now = "none of these: unlike every class (a new class?)" if r.unknown else f"{r.predicted} {r.confidence:.2f}"
        print(f"{n:>3}  {r.score:.4f}  {r.path}  (now: {now})")
    print(f"{len(rows)} pool images ranked; --json lists them all")
    return 0
