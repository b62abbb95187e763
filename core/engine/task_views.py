"""The task views of a finished multi-task run: for each task, <run>/tasks/<task>/ shaped like a single-task run
folder, so the Results, Inspect, Predict and Export pages and the CLI serve one task of the run as any run.

Each view holds what finish_run writes for a single-task run, for that task alone:
    config.yaml      the run's config made single-task (data = the image root, no tasks)
    task.json        the task's images per split, relative to that root (core/data/task_view.py)
    summary.json     the task's classes, validation/test reports, calibration (temperature) and leakage
    predictions.npz  the task's labeled validation/test images: probabilities, pooled features, labels, paths
    metrics.jsonl    the run's epochs with the task's own validation loss and accuracy
    dataset.json, record.json, status.json
    bundle/          the task's timm bundle (the shared backbone with its head; loads alone with timm local-dir),
                     its calibration temperature in config.json
The bundle's config.yaml is the multi-task run's portable config: it replays the run that made the weights.
"""

from __future__ import annotations

import dataclasses
import json

from core.analysis.calibration import summary_calibration
from core.analysis.predictions import Predictions, SplitOutputs, save_predictions
from core.data.duplicates import leakage_summary
from core.data.task_samples import MultiTaskDataset
from core.data.task_view import task_dataset, write_task_file
from core.engine.finish import portable_dataset_summary
from core.engine.loop import Session
from core.export.bundle import write_bundle
from core.export.record import write_run_record
from core.files.atomic import atomic_write_json, atomic_write_text
from core.models.multitask import task_model
from core.runs import TASKS_DIR, RunDir, RunSummary, SplitReport, Status


def write_task_views(s: Session, ds: MultiTaskDataset, per_task: dict[str, dict[str, SplitOutputs]],
                     reports: dict[str, dict[str, SplitReport]], summary: RunSummary, status: str,
                     ) -> dict[str, float]:
    """Write every task's view; returns task -> its calibration temperature (1.0 when none was fitted)."""
    temperatures = {}
    history = s.run.read_metrics()
    for t, task in enumerate(ds.tasks):
        view = RunDir(s.run.path / TASKS_DIR / task.name)
        view.path.mkdir(parents=True, exist_ok=True)
        data = task_dataset(ds, t)
        outputs = per_task[task.name]
        val = outputs.get("val")
        cfg = s.cfg.replace(data=str(data.root), tasks="", task_weights="")
        view_summary = dataclasses.replace(
            summary, classes=list(task.classes), val=reports[task.name].get("val"),
            test=reports[task.name].get("test"), tasks=None, num_train=len(data.train),
            calibration=summary_calibration(val and val.probs, val and val.labels),
            leakage=leakage_summary(data, s.gathered),
            notes=[*summary.notes, f"Task '{task.name}' of multi-task run {s.run.run_id} (one shared backbone, a "
                                   f"head per task): its images and scores only."])
        temperatures[task.name] = float((view_summary.calibration or {}).get("temperature", 1.0))
        cfg.save(view.config)
        write_task_file(view.path, data, task.name, s.run.run_id)
        save_predictions(view.predictions, Predictions(list(task.classes), outputs))
        atomic_write_json(view.dataset_file, portable_dataset_summary(data.summary()))
        atomic_write_text(view.metrics, "".join(json.dumps(task_epoch(m, task.name)) + "\n" for m in history))
        view.write_summary(view_summary)
        write_bundle(task_model(s.model, t), s.data_cfg, task.classes, s.cfg.portable(), view_summary,
                     view.bundle_dir)
        # record.json in the view and its bundle, the model card
        write_run_record(view, cfg, data, view_summary, s.gathered and s.gathered.digests)
        view.write_status(Status(status))  # last: a view is listed (RunDir.task_views) once it is complete
        s.emit("on_phase", "exporting a bundle per task", t + 1, len(ds.tasks))
    return temperatures


def task_epoch(line: dict, task: str) -> dict:
    """A metrics.jsonl line of the multi-task run as the task's own: its validation loss and accuracy (and its
    training accuracy) in place of the joint ones; the training loss stays the run's weighted sum."""
    own = (line.get("tasks") or {}).get(task, {})
    return {**{k: v for k, v in line.items() if k != "tasks"}, **own}
