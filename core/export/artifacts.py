"""Export a finished run to a deployable file and check it: `export_run(run, "onnx" | "onnx-int8" | "torchscript")`.

Each export lands in `<run>/exports/<format>/` with its check.json (core/export/parity.py); the bundle's model card
is refreshed so it lists the checks. The app runs this as a job (JobRegistry.submit_task), the CLI directly.
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.analysis.predictions import load_predictions
from core.analysis.unknown import FILE as UNKNOWN_FILE
from core.config import TrainConfig
from core.data.task_view import open_run_dataset
from core.errors import DatasetError
from core.export.bundle import LoadedModel, load_bundle
from core.export.onnx import OnnxRunner, Probabilities, ProbabilitiesAndUnknown, export_onnx, quantize_int8
from core.export.parity import (
    FILES,
    Agreement,
    ExportCheck,
    calibration_sample,
    check_batches,
    exports_dir,
    latency_ms,
    verdict,
    write_check,
)
from core.export.record import refresh_card
from core.export.torchscript import TorchScriptRunner, export_torchscript
from core.files.atomic import atomic_write_bytes
from core.files.digest import bytes_digest, file_digest, sha256_file
from core.runs import RunDir

Progress = Callable[[str, int, int], None]


@dataclass
class CheckImages:
    """The run's validation images as the check reads them, and training images for int8 calibration."""

    paths: list[Path]
    labels: np.ndarray
    run_top1: np.ndarray
    train: list[Path]


def export_run(run: RunDir, fmt: str, progress: Progress | None = None,
               should_stop: Callable[[], bool] = lambda: False) -> ExportCheck | None:
    """Export, check on the validation images, write check.json, refresh the card. None when stopped."""
    if fmt not in FILES:
        raise ValueError(f"Unknown export format '{fmt}'; choose one of {', '.join(FILES)}.")
    progress = progress or (lambda *_: None)
    if not (run.bundle_dir / "model.safetensors").exists():
        raise FileNotFoundError(f"Run {run.run_id} has no trained model to export (it did not finish training).")
    t0 = time.perf_counter()
    images = check_images(run)
    loaded = load_bundle(run.bundle_dir)
    out = exports_dir(run) / fmt
    shutil.rmtree(out, ignore_errors=True)  # an older export of this format is replaced, never mixed with
    out.mkdir(parents=True)
    progress(f"exporting {fmt}", 0, 1)
    path, reference, method = _make(fmt, loaded, out, images)
    runner = TorchScriptRunner(path) if fmt == "torchscript" else OnnxRunner(path)
    agreement = _agreement(run, loaded, runner, images, progress, should_stop)
    if agreement is None:
        shutil.rmtree(out, ignore_errors=True)
        return None
    extra = {}
    if reference is not None:  # int8: what it gains over the float32 file
        progress("measuring CPU latency", 0, 1)
        x = loaded.inputs(images.paths[:1])
        lat, ref_lat = latency_ms([runner, OnnxRunner(reference)], x)
        extra = {"reference_bytes": reference.stat().st_size, "latency_ms": lat, "reference_latency_ms": ref_lat}
        reference.unlink()
    a = agreement
    check = ExportCheck(fmt, path.name, path.stat().st_size, sha256_file(path), a.images, a.share(a.agree_run),
                        a.share(a.agree_model), a.max_diff, a.share(a.correct), a.share(a.correct_model),
                        passed=not (reason := verdict(fmt, a)), reason=reason,
                        method=method, seconds=time.perf_counter() - t0, created=time.time(),
                        unknown_agree=a.share(a.unknown_agree) if a.unknown_images else None, **extra)
    write_check(out / "check.json", check)
    refresh_card(run)
    return check


def check_images(run: RunDir) -> CheckImages:
    """Validation images in the run's recorded order, from the dataset the run trained on."""
    preds = load_predictions(run.predictions)
    if preds is None or "val" not in preds.splits:
        raise FileNotFoundError(f"Run {run.run_id} has no predictions.npz (made before exports were checked); "
                                f"train it again to export it with a check.")
    cfg = TrainConfig.load(run.config)
    try:
        ds = open_run_dataset(run.path, cfg)  # a task view's listed images, else the class folders
    except DatasetError as exc:
        raise DatasetError(f"{exc} An export is checked on run {run.run_id}'s validation images: put the dataset "
                           f"back where it was trained from, then export again.") from None
    val = preds.splits["val"]
    paths = [Path(ds.root) / p for p in val.paths]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} validation image(s) of run {run.run_id} are gone, e.g. {missing[0]}; "
                           f"the export cannot be checked without them. Restore them and export again.")
    train = calibration_sample([Path(s.path) for s in ds.train], cfg.seed)
    return CheckImages(paths, val.labels, val.predicted, train)


def _make(fmt: str, loaded: LoadedModel, out: Path, images: CheckImages) -> tuple[Path, Path | None, str]:
    """Write the export; returns its path, for int8 the float32 ONNX file it was made from, and the int8 method."""
    args = (loaded.model, loaded.classes, loaded.data_cfg, loaded.temperature)
    if fmt == "torchscript":
        return export_torchscript(*args, out / FILES[fmt]), None, ""
    if fmt == "onnx":
        return export_onnx(*args, out / FILES[fmt], unknown=loaded.unknown), None, ""
    reference = export_onnx(*args, out / "reference-fp32.onnx", unknown=loaded.unknown)
    calibration = loaded.input_batches(images.train) if images.train else None
    method = quantize_int8(reference, out / FILES[fmt], calibration)
    return out / FILES[fmt], reference, method


REFERENCE = "reference.npz"  # exports/: the trained model's outputs on the check images, shared by every format


def _agreement(run: RunDir, loaded: LoadedModel, runner, images: CheckImages, progress: Progress,
               should_stop: Callable[[], bool]) -> Agreement | None:
    """The exported file over the validation images in batches, against the trained model's outputs on the same
    inputs; None when stopped. The model's outputs are the same for every format: the first check computes them
    (one pass of each per batch) and keeps them in exports/reference.npz, keyed by what they depend on, and later
    checks of the same bundle read them instead of running the model again."""
    with_unknown = isinstance(runner, OnnxRunner) and runner.has_unknown  # then its decision is compared too
    kept = _read_reference(run, images)
    model = None if kept is not None else (
        ProbabilitiesAndUnknown(loaded.model, loaded.temperature, loaded.unknown) if loaded.unknown is not None
        else Probabilities(loaded.model, loaded.temperature)).eval()
    probs, flags = kept or ([], [])
    a = Agreement()
    for rows, x in check_batches(images.paths, loaded.inputs, progress, should_stop):
        if model is not None:
            with torch.inference_mode():
                out = model(torch.from_numpy(x))
            probs.append(out[0].numpy() if loaded.unknown is not None else out.numpy())
            if loaded.unknown is not None:
                flags.append(out[2].numpy())
        expected = probs[rows] if kept else probs[-1]
        if with_unknown:  # the unknown-input decision: the file's against the bundle's on the same input
            exported, _, flag = runner.with_unknown(x)
            a.add_unknown(flag, flags[rows] if kept else flags[-1])
        else:
            exported = runner(x)
        a.add(exported, expected, images.run_top1[rows], images.labels[rows])
    if should_stop():
        return None
    if kept is None:
        _write_reference(run, images, np.concatenate(probs), np.concatenate(flags) if flags else None)
    return a


def _reference_key(run: RunDir, images: CheckImages) -> str:
    """What the model's outputs depend on: the bundle's weights, config (preprocessing, temperature) and
    unknown-input scorer, and the check images in their order."""
    files = [run.bundle_dir / n for n in ("model.safetensors", "config.json", UNKNOWN_FILE)]
    parts = [file_digest(f) for f in files if f.exists()] + [str(p) for p in images.paths]
    return bytes_digest("\n".join(parts).encode())


def _read_reference(run: RunDir, images: CheckImages) -> tuple[np.ndarray, np.ndarray | None] | None:
    try:
        with np.load(exports_dir(run) / REFERENCE) as z:
            if str(z["key"]) != _reference_key(run, images):
                return None  # another bundle (trained again) or other images: computed again
            return z["probs"], (z["unknown"] if "unknown" in z.files else None)
    except (OSError, KeyError, ValueError):  # none yet, or unreadable: computed again
        return None


def _write_reference(run: RunDir, images: CheckImages, probs: np.ndarray, flags: np.ndarray | None) -> None:
    buf = io.BytesIO()
    np.savez(buf, key=np.array(_reference_key(run, images)), probs=probs,
             **({"unknown": flags} if flags is not None else {}))
    atomic_write_bytes(exports_dir(run) / REFERENCE, buf.getvalue())
