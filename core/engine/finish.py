"""The end of a run: the best weights reloaded and evaluated on every split (validation, and test when the dataset
has one), then summary.json, predictions.npz, dataset.json and the bundle written into the run folder.

Nothing written here holds an absolute server path: files are named relative to the dataset root, the dataset
by its folder name, and the bundle carries the portable config (TrainConfig.portable)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from safetensors.torch import load_file

from core.analysis.calibration import summary_calibration
from core.analysis.metrics import classification_report
from core.analysis.predictions import Predictions, SplitOutputs, save_predictions
from core.data.duplicates import leakage_summary
from core.engine.callbacks import FitResult
from core.engine.loop import Session
from core.export.bundle import write_bundle
from core.export.record import write_run_record
from core.files.atomic import atomic_write_json, share_file
from core.files.paths import relative_path
from core.models.init_from import run_lineage
from core.runs import RunSummary, SplitReport, Status


def finish_run(s: Session, status: str) -> FitResult:
    if not s.run.best_weights.exists():
        summary = RunSummary(Status(status), s.cfg.backbone, s.cfg.freeze, _dataset_name(s),
                             s.dataset.classes if s.dataset else [], train_seconds=time.perf_counter() - s.t0,
                             note="stopped before any training happened; nothing to export")
        s.run.write_summary(summary)
        return FitResult(Status(status), str(s.run.path), summary)
    s.model.load_state_dict(load_file(str(s.run.best_weights)))
    ds = s.dataset
    outputs = {split: _outputs(s, split) for split in ("val", "test") if getattr(ds, split)}
    summary = build_summary(s, outputs, status)
    val = outputs.get("val")  # the temperature ships in the bundle; leakage warns on the Results page
    summary = dataclasses.replace(summary, calibration=summary_calibration(val and val.probs, val and val.labels),
                                  leakage=leakage_summary(ds))
    save_predictions(s.run.predictions, Predictions(ds.classes, outputs))
    atomic_write_json(s.run.dataset_file, portable_dataset_summary(ds.summary()))
    s.run.write_summary(summary)
    write_bundle(s.model, s.data_cfg, ds.classes, s.cfg.portable(), summary, s.run.bundle_dir)
    share_file(s.run.bundle_dir / "model.safetensors", s.run.best_weights)  # one copy of the weights
    write_run_record(s.run, s.cfg, ds, summary)  # record.json (data hashes, versions, ...) and the full model card
    for store in s.run.path.glob("decoded-*.npy"):  # memory-mapped image stores of large sets
        store.unlink()
    return FitResult(Status(status), str(s.run.path), summary)


def _outputs(s: Session, split: str) -> SplitOutputs:
    logits, pooled = s.final_outputs(split)
    samples = getattr(s.dataset, split)
    probs = F.softmax(logits.float(), dim=1).cpu().numpy() if len(logits) else np.zeros((0, len(s.dataset.classes)))
    return SplitOutputs(probs.astype(np.float32), pooled.float().cpu().numpy(),
                        np.array([x.label for x in samples], dtype=np.int64),
                        [relative_path(x.path, s.dataset.root) for x in samples])


def build_summary(s: Session, outputs: dict[str, SplitOutputs], status: str) -> RunSummary:
    ds = s.dataset
    history = s.run.read_metrics()
    best = max(history, key=lambda m: (m["val_acc"], -m["val_loss"])) if history else None
    start = s.start_eval  # a starting point no epoch beat is the delivered model: best epoch 0
    if start is not None and (best is None or (start.acc, -start.loss) >= (best["val_acc"], -best["val_loss"])):
        best = {"epoch": 0}
    reports = {split: SplitReport.from_dict({**classification_report(o.labels, o.predicted, ds.classes),
                                             "num": len(o.labels)}) for split, o in outputs.items()}
    return RunSummary(
        status=Status(status), backbone=s.cfg.backbone, freeze=s.cfg.freeze, dataset=_dataset_name(s),
        classes=list(ds.classes), val=reports.get("val"), test=reports.get("test"),
        best_epoch=best["epoch"] if best else None, epochs_run=len(history),
        train_seconds=time.perf_counter() - s.t0, num_train=len(ds.train),
        skipped=[relative_path(k.path, ds.root) for k in ds.skipped], device=str(s.device),
        batch_size=s.batch_size, notes=list(s.notes),
        lineage=run_lineage(s.cfg, s.run.run_id, _dataset_name(s)))


def portable_dataset_summary(summary: dict) -> dict:
    """Dataset.summary() with the root named, not located, and every path relative to it."""
    root = summary["root"]
    return {**summary, "root": Path(root).name,
            "examples": {c: [relative_path(p, root) for p in paths] for c, paths in summary["examples"].items()},
            "skipped": [{**k, "path": relative_path(k["path"], root)} for k in summary["skipped"]]}


def _dataset_name(s: Session) -> str:
    return Path(s.cfg.data).name



