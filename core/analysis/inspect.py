"""Inspect a finished run: calibration, top losses, mislabel ranking, embedding map, saliency maps, duplicates.

Everything is computed from the run folder (config.yaml, summary.json, predictions.npz, bundle/) and the
dataset it names, so it works for runs made before a restart. Reports are written under <run>/inspect/ as JSON
(and PNG for the reliability diagram and the heat-maps); the app reads the same files back. Steps that run a
model over many images (scoring the training images, the mislabel ranking) take progress and stop callbacks
so the job registry can run them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch

from core.analysis import calibration as cal
from core.analysis.embedding import embed_2d, sample_indices
from core.analysis.mislabels import out_of_sample_probs, rank_mislabels, suspects_to_dicts
from core.analysis.predictions import Predictions, SplitOutputs, load_predictions
from core.analysis.render import reliability_png
from core.analysis.saliency import saliency_for_image
from core.config import TrainConfig
from core.data.dataset import Dataset
from core.data.duplicates import find_duplicates
from core.data.images import load_image
from core.data.task_view import open_run_dataset
from core.errors import DatasetError
from core.files.atomic import atomic_write_json
from core.files.paths import relative_path
from core.runs import RunDir, RunSummary

Progress = Callable[[str, int, int], None]
BATCH = 16


@dataclass
class RunView:
    """What every report reads: the run, its config, summary, predictions and temperature."""

    run: RunDir
    cfg: TrainConfig
    summary: RunSummary
    preds: Predictions

    @property
    def out(self) -> Path:
        return self.run.path / "inspect"

    @property
    def root(self) -> Path:
        """The folder the run's image paths are relative to: its data folder, or where its zip was unpacked (the
        zip's path when it cannot be opened any more: nothing exists under it, so reports skip training images)."""
        data = Path(self.cfg.data)
        if not data.is_file():
            return data
        try:
            return Path(self.dataset().root)
        except DatasetError:
            return data

    @property
    def classes(self) -> list[str]:
        return self.preds.classes

    @property
    def temperature(self) -> float:
        return float((self.summary.calibration or {}).get("temperature", 1.0))

    def dataset(self) -> Dataset:
        """The run's dataset with the run's own split (same folder, fraction and seed); for a task view of a
        multi-task run, the images its task.json lists (core/data/task_view.py)."""
        try:
            return open_run_dataset(self.run.path, self.cfg)
        except DatasetError as exc:
            raise DatasetError(f"The dataset of run {self.run.run_id} cannot be opened ({exc}); put it back at "
                               f"{self.cfg.data} to inspect training images.") from None


def open_view(run: RunDir) -> RunView:
    """Raise one sentence when the run cannot be inspected."""
    if not run.config.exists():
        raise FileNotFoundError(f"{run.path} is not a run folder (no config.yaml).")
    summary = run.read_summary()
    if summary is not None and summary.tasks and run.task_views():
        raise ValueError(f"Run {run.run_id} is a multi-task run: inspect one of its tasks ("
                         + ", ".join(v.run_id for v in run.task_views()) + ").")
    preds = load_predictions(run.predictions)
    if summary is None or not summary.has_results or preds is None or "val" not in preds.splits:
        raise ValueError(f"Run {run.run_id} has no validation predictions to inspect (it did not finish, or was "
                         f"made before predictions.npz existed); train it again.")
    return RunView(run, TrainConfig.load(run.config), summary, preds)


# ---------------------------------------------------------------------------------------------------------
# calibration and losses: from predictions.npz alone, instant

def calibration_report(view: RunView) -> dict:
    """ECE and reliability before/after the run's temperature (refitted when the run predates calibration)."""
    val = view.preds.splits["val"]
    logits = cal.logits_from_probs(val.probs)
    stored = view.summary.calibration
    if stored and "temperature" in stored:
        t = float(stored["temperature"])
        before, after = cal.softmax_t(logits, 1.0), cal.softmax_t(logits, t)
        rep = cal.Calibration(t, cal.ece(before, val.labels), cal.ece(after, val.labels), cal.nll(before, val.labels),
                              cal.nll(after, val.labels), len(val.labels), cal.BINS, stored.get("warning", ""),
                              cal.reliability(before, val.labels), cal.reliability(after, val.labels))
    else:
        rep = cal.calibrate(logits, val.labels)
    return rep.to_dict()


def calibrated(outputs: SplitOutputs, temperature: float) -> np.ndarray:
    return cal.softmax_t(cal.logits_from_probs(outputs.probs), temperature)


def loss_table(outputs: SplitOutputs, classes: list[str], temperature: float) -> list[dict]:
    """Every image, highest loss first: path, true and predicted class, loss and confidence (calibrated)."""
    probs = calibrated(outputs, temperature)
    n = len(outputs.labels)
    loss = -np.log(np.clip(probs[np.arange(n), outputs.labels], 1e-12, None))
    pred = probs.argmax(1) if n else np.zeros(0, dtype=int)
    return [{"path": outputs.paths[i], "true": classes[outputs.labels[i]], "predicted": classes[pred[i]],
             "loss": float(loss[i]), "confidence": float(probs[i].max()), "correct": bool(pred[i] == outputs.labels[i])}
            for i in np.argsort(-loss, kind="stable")]


# ---------------------------------------------------------------------------------------------------------
# the fine-tuned model over the training images (a job: seconds to minutes)

def load_run_model(run: RunDir) -> tuple[torch.nn.Module, object]:
    """The run's fine-tuned model and eval transform, from its bundle (timm's own loader)."""
    if not (run.bundle_dir / "model.safetensors").exists():
        raise FileNotFoundError(f"Run {run.run_id} has no model bundle (it did not finish training).")
    model = timm.create_model(f"local-dir:{run.bundle_dir}", pretrained=True).eval()
    return model, timm.data.create_transform(**timm.data.resolve_model_data_config(model))


@torch.inference_mode()
def score_training(view: RunView, progress: Progress | None = None,
                   should_stop: Callable[[], bool] = lambda: False) -> SplitOutputs:
    """The fine-tuned model's probabilities and pooled features for every training image (cached in
    inspect/train_outputs.npz: training images did not change while the run folder exists)."""
    cache = view.out / "train_outputs.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            return SplitOutputs(z["probs"], z["features"], z["labels"], z["paths"].tolist())
    samples = view.dataset().train
    model, transform = load_run_model(view.run)
    probs, feats = [], []
    for i in range(0, len(samples), BATCH):
        if should_stop():
            raise InterruptedError("stopped")
        x = torch.stack([transform(load_image(s.path)) for s in samples[i:i + BATCH]])
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        probs.append(model.get_classifier()(pooled).softmax(-1).numpy())
        feats.append(pooled.numpy())
        if progress:
            progress("scoring training images", min(i + BATCH, len(samples)), len(samples))
    out = SplitOutputs(np.concatenate(probs).astype(np.float32), np.concatenate(feats).astype(np.float32),
                       np.array([s.label for s in samples], dtype=np.int64),
                       [relative_path(s.path, view.root) for s in samples])
    view.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, probs=out.probs, features=out.features, labels=out.labels,
                        paths=np.array(out.paths, dtype=str))
    return out


def mislabel_report(view: RunView, progress: Progress | None = None,
                    should_stop: Callable[[], bool] = lambda: False) -> list[dict]:
    """Training images ranked by confident learning on out-of-sample probabilities (pretrained features)."""
    from core.models.features import pretrained_features
    samples = view.dataset().train
    feats, failed = pretrained_features(view.cfg, samples, exact=True,
                                        progress=(lambda d, t: progress("backbone features", d, t)) if progress
                                        else None, should_stop=should_stop)
    keep = [i for i, f in enumerate(feats) if f is not None]
    x = np.stack([feats[i][0] for i in keep])
    labels = np.array([samples[i].label for i in keep], dtype=np.int64)
    if progress:
        progress("cross-validating heads", 0, 1)
    probs = out_of_sample_probs(x, labels, len(view.classes), seed=view.cfg.seed)
    paths = [relative_path(samples[i].path, view.root) for i in keep]
    return suspects_to_dicts(rank_mislabels(probs, labels, paths, view.classes))


def embedding_report(view: RunView, train: SplitOutputs | None) -> list[dict]:
    """2-D map points of validation (and training, when scored) images in the fine-tuned model's feature space."""
    parts = [("val", view.preds.splits["val"])] + ([("train", train)] if train is not None else [])
    rows, feats = [], []
    for split, o in parts:
        pred = calibrated(o, view.temperature).argmax(1)
        for i in sample_indices(len(o.labels)):
            rows.append({"split": split, "path": o.paths[i], "true": view.classes[o.labels[i]],
                         "predicted": view.classes[pred[i]], "correct": bool(pred[i] == o.labels[i])})
            feats.append(o.features[i])
    xy = embed_2d(np.stack(feats), seed=view.cfg.seed) if feats else np.zeros((0, 2))
    return [{**r, "x": float(p[0]), "y": float(p[1])} for r, p in zip(rows, xy, strict=True)]


def saliency_pngs(view: RunView, rel_paths: list[str], class_idx: int | None = None) -> list[dict]:
    """Grad-CAM overlays for images of the dataset, written to inspect/saliency/; one row per image."""
    model, transform = load_run_model(view.run)
    folder = view.out / "saliency"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for rel in rel_paths:
        img, cls, probs = saliency_for_image(model, transform, load_image(view.root / rel), class_idx)
        name = rel.replace("/", "__").rsplit(".", 1)[0] + f"__{view.classes[cls]}.png"
        img.save(folder / name)
        prob = cal.softmax_t(cal.logits_from_probs(probs[None]), view.temperature)[0, cls]
        rows.append({"path": rel, "class": view.classes[cls], "png": f"saliency/{name}", "prob": float(prob)})
    return rows


# ---------------------------------------------------------------------------------------------------------
# everything at once: `python -m core inspect RUN`

def inspect_run(run: RunDir, progress: Progress | None = None, should_stop: Callable[[], bool] = lambda: False,
                saliency_images: int = 8) -> dict:
    """Write every report under <run>/inspect/ and return the index (inspect/report.json)."""
    view = open_view(run)
    view.out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}

    def save(name: str, data) -> None:
        atomic_write_json(view.out / name, data)
        written[name.rsplit(".", 1)[0]] = name

    calib = calibration_report(view)
    save("calibration.json", calib)
    reliability_png(calib["reliability_before"], calib["reliability_after"], view.out / "reliability.png",
                    f"ECE {calib['ece_before']:.3f} -> {calib['ece_after']:.3f} (T = {calib['temperature']:.2f}, "
                    f"{calib['num']} validation images)")
    written["reliability"] = "reliability.png"
    save("top_losses_val.json", loss_table(view.preds.splits["val"], view.classes, view.temperature))
    train = None
    if view.root.exists():
        train = score_training(view, progress, should_stop)
        save("top_losses_train.json", loss_table(train, view.classes, view.temperature))
        save("mislabels.json", mislabel_report(view, progress, should_stop))
        save("duplicates.json", find_duplicates(view.dataset(), progress=(lambda d, t: progress(
            "hashing images", d, t)) if progress else None).to_dict())
        worst = [r["path"] for r in loss_table(view.preds.splits["val"], view.classes, view.temperature)]
        save("saliency.json", saliency_pngs(view, worst[:saliency_images]))
    save("embedding.json", embedding_report(view, train))
    index = {"run": run.run_id, "reports": written, "temperature": view.temperature,
             "dataset_found": view.root.exists()}
    atomic_write_json(view.out / "report.json", index)
    return index


def read_report(run: RunDir, name: str):
    """A report written by inspect_run (or by the app's jobs), or None."""
    path = run.path / "inspect" / name
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
