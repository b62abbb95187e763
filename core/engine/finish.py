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
from core.analysis.unknown import UnknownScore, fit_unknown
from core.analysis.unknown import scores as unknown_scores
from core.data.derived import labeling_note
from core.data.duplicates import leakage_summary
from core.engine.callbacks import FitResult
from core.engine.loop import Session, beats_start, best_epoch
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
    raw = {split: s.final_outputs(split) for split in ("val", "test") if getattr(ds, split)}
    outputs = {split: _outputs(s, split, *got) for split, got in raw.items()}
    summary = build_summary(s, outputs, status)
    val = outputs.get("val")  # the temperature ships in the bundle; leakage warns on the Results page
    calibration = summary_calibration(val and val.probs, val and val.labels)
    scorer, unknown = _fit_unknown(s, raw, outputs, float((calibration or {}).get("temperature", 1.0)))
    summary = dataclasses.replace(summary, calibration=calibration, leakage=leakage_summary(ds, s.gathered),
                                  unknown=unknown)
    save_predictions(s.run.predictions, Predictions(ds.classes, outputs))
    atomic_write_json(s.run.dataset_file, portable_dataset_summary(ds.summary()))
    s.run.write_summary(summary)
    write_bundle(s.model, s.data_cfg, ds.classes, s.cfg.portable(), summary, s.run.bundle_dir, unknown=scorer)
    share_file(s.run.bundle_dir / "model.safetensors", s.run.best_weights)  # one copy of the weights
    # record.json (data hashes, versions, ...) and the full model card
    write_run_record(s.run, s.cfg, ds, summary, s.gathered and s.gathered.digests)
    for store in s.run.path.glob("decoded-*.npy"):  # memory-mapped image stores of large sets
        store.unlink()
    return FitResult(Status(status), str(s.run.path), summary)


def _outputs(s: Session, split: str, logits, pooled) -> SplitOutputs:
    samples = getattr(s.dataset, split)
    probs = F.softmax(logits.float(), dim=1).cpu().numpy() if len(logits) else np.zeros((0, len(s.dataset.classes)))
    return SplitOutputs(probs.astype(np.float32), pooled.float().cpu().numpy(),
                        np.array([x.label for x in samples], dtype=np.int64),
                        [relative_path(x.path, s.dataset.root) for x in samples])


def _fit_unknown(s: Session, raw: dict, outputs: dict[str, SplitOutputs], temperature: float,
                 ) -> tuple[UnknownScore | None, dict]:
    """The unknown-input score fitted on the training images' pooled features, thresholded on the validation
    images; each split's scores go into predictions.npz (outputs, in place). Skipped, with a note, when there is
    nothing to fit it on."""
    ds = s.dataset
    if len(raw["val"][0]) == 0:
        return None, {"note": "no validation images to set the unknown-input threshold on"}
    _, train_pooled = s.one_view_outputs("train")
    train_labels = np.array([x.label for x in ds.train], dtype=np.int64)
    if len(train_pooled) != len(train_labels) or not len(train_labels):
        return None, {"note": "the training images' features were not available; no unknown-input score"}
    val_logits, val_pooled = raw["val"]
    scorer = fit_unknown(train_pooled.float().cpu().numpy(), train_labels, len(ds.classes),
                         val_logits.float().cpu().numpy(), val_pooled.float().cpu().numpy(), temperature,
                         seed=s.cfg.seed)
    for split, (logits, pooled) in raw.items():
        outputs[split].unknown = unknown_scores(scorer, logits.cpu(), pooled.cpu())
    flagged = float((outputs["val"].unknown > float(scorer.threshold)).mean())
    return scorer, {**scorer.describe(), "val_flagged": flagged, "train_images": len(train_labels)}


def build_summary(s: Session, outputs: dict[str, SplitOutputs], status: str) -> RunSummary:
    ds = s.dataset
    history = s.run.read_metrics()
    best = best_epoch(history)
    if not beats_start(best, s.start_eval):  # a starting point no epoch beat is the delivered model: best epoch 0
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
        lineage=run_lineage(s.cfg, s.run.run_id, _dataset_name(s) + labeling_note(ds.root)))


def portable_dataset_summary(summary: dict) -> dict:
    """Dataset.summary() with the root named, not located, and every path relative to it."""
    root = summary["root"]
    return {**summary, "root": Path(root).name,
            "examples": {c: [relative_path(p, root) for p in paths] for c, paths in summary["examples"].items()},
            "skipped": [{**k, "path": relative_path(k["path"], root)} for k in summary["skipped"]]}


def _dataset_name(s: Session) -> str:
    return Path(s.cfg.data).name



