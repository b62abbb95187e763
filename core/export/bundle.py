"""Export bundle: a timm / Hugging Face Hub model folder anyone can load, plus the run's config and metrics.

Layout (the same as a folder inside the run and as a zip):
    config.json         timm's own (save_for_hf): architecture, num_classes, label_names, pretrained_cfg
    model.safetensors   the fine-tuned weights
    config.yaml         the TrainConfig that produced it (replay with `python -m core train --config`)
    summary.json        final metrics
    unknown.safetensors the unknown-input scorer ("none of these", core/analysis/unknown.py), when the run has one
    README.md           model card with the loading snippet
Load it with `timm.create_model("local-dir:<folder>", pretrained=True)` or `load_bundle()` below.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from core.analysis.unknown import FILE as UNKNOWN_FILE
from core.analysis.unknown import UnknownScore, load_scorer, save_scorer
from core.config import TrainConfig
from core.data.images import load_image
from core.export.card import render_card
from core.files.zips import safe_zip_members
from core.models.freeze import PooledAndLogits
from core.models.tta import mean_of_views, mirror
from core.runs import RunDir, RunSummary


def write_bundle(model: nn.Module, data_cfg: dict, classes: list[str], cfg: TrainConfig, summary: RunSummary,
                 dest: Path, unknown: UnknownScore | None = None) -> Path:
    """Write the bundle folder atomically (a temp folder renamed into place). `cfg` should be the portable
    config (TrainConfig.portable): the bundle leaves the server. `unknown`: the unknown-input scorer, saved as
    unknown.safetensors (timm's loader ignores it) and described under config.json's "unknown"."""
    dest = Path(dest)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        model = model.to("cpu").to(memory_format=torch.contiguous_format)
        cfg_for_hf = {k: v for k, v in data_cfg.items() if k in ("input_size", "interpolation", "mean", "std",
                                                                  "crop_pct", "crop_mode")}
        # temperature: calibrated probabilities are softmax(logits / temperature); a top-level config.json key
        temperature = float((summary.calibration or {}).get("temperature", 1.0))
        # tta: "flip" = predictions average the image's and its mirror image's probabilities (load_bundle does)
        extra = {"unknown": {**unknown.describe(), "file": UNKNOWN_FILE}} if unknown is not None else {}
        timm.models.save_for_hf(model, tmp, model_config={"label_names": list(classes), "temperature": temperature,
                                                          "tta": cfg.tta, **extra},
                                safe_serialization=True, data_config=cfg_for_hf)
        if unknown is not None:
            save_scorer(unknown, tmp / UNKNOWN_FILE)
        (tmp / "config.yaml").write_text(config_yaml(cfg, summary), encoding="utf-8")
        (tmp / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2), encoding="utf-8")
        # the card as known now (no run record or export checks yet); record.refresh_card re-renders it
        (tmp / "README.md").write_text(render_card(cfg, classes, summary), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def config_yaml(cfg: TrainConfig, summary: RunSummary) -> str:
    """config.yaml as the bundle carries it: headed by the weights' lineage as a comment (a replay ignores it)."""
    lineage = getattr(summary, "lineage", None)
    return (f"# lineage: {' -> '.join(lineage)}\n" if lineage else "") + cfg.to_yaml()


def export_zip(run: RunDir) -> Path:
    """Zip the run's bundle folder into <run>/<run_id>-model.zip (written to a temp name, then renamed)."""
    if not (run.bundle_dir / "model.safetensors").exists():
        raise FileNotFoundError(f"Run {run.run_id} has no exported model yet (it did not finish training).")
    out = run.path / f"{run.run_id}-model.zip"
    tmp = out.with_suffix(".zip.partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(run.bundle_dir.iterdir()):
            zf.write(f, f"{run.run_id}/{f.name}")
    tmp.replace(out)
    return out


@dataclass
class LoadedModel:
    model: nn.Module
    classes: list[str]
    data_cfg: dict
    transform: object
    temperature: float = 1.0  # calibration: probabilities are softmax(logits / temperature); 1.0 = uncalibrated
    tta: str = "off"  # "flip": the image's and its mirror image's probabilities averaged (core/models/tta.py)
    unknown: UnknownScore | None = None  # the unknown-input scorer (None: a bundle made without one)

    def inputs(self, paths: list[str | Path]) -> np.ndarray:
        """The bundle's own timm transform over `paths`: exactly what a timm user feeds an exported file."""
        return torch.stack([self.transform(load_image(p)) for p in paths]).numpy()

    def input_batches(self, paths: list[str | Path], size: int = 8) -> Iterator[np.ndarray]:
        """inputs() in batches of `size` (int8 calibration)."""
        for i in range(0, len(paths), size):
            yield self.inputs(paths[i:i + size])

    def predict(self, paths: list[str | Path], topk: int = 3, batch_size: int = 16) -> list[list[tuple]]:
        """Top-k (class, probability) per image, with the bundle's own preprocessing."""
        return [p.top for p in self.assess(paths, topk, batch_size)]

    @torch.inference_mode()
    def assess(self, paths: list[str | Path], topk: int = 3, batch_size: int = 16,
               threshold: float | None = None) -> list[Prediction]:
        """Top-k (class, probability) per image and, when the bundle has a scorer, its unknown-input score and
        whether it is over the threshold (the bundle's, or `threshold` when given)."""
        out = []
        for i in range(0, len(paths), batch_size):
            x = torch.from_numpy(self.inputs(paths[i:i + batch_size]))
            logits, pooled = PooledAndLogits(self.model)(x)
            if self.tta == "flip":
                logits = mean_of_views(logits, self.model(mirror(x)))
            # as the run scored its validation images: the (averaged) logits, the image's own pooled features
            score = self.unknown.score(logits, pooled).tolist() if self.unknown is not None else [None] * len(x)
            probs = (logits / self.temperature).softmax(-1)
            vals, idx = probs.topk(min(topk, probs.shape[1]), dim=1)
            limit = threshold if threshold is not None else self.unknown_threshold
            out += [Prediction([(self.classes[j], float(v)) for v, j in zip(vr, ir, strict=True)], s,
                               None if s is None else bool(s > limit))
                    for vr, ir, s in zip(vals.tolist(), idx.tolist(), score, strict=True)]
        return out

    @property
    def unknown_threshold(self) -> float | None:
        return float(self.unknown.threshold) if self.unknown is not None else None


@dataclass
class Prediction:
    """One image's prediction: top-k (class, probability), best first, and the unknown-input verdict (None
    for both when the bundle has no scorer)."""

    top: list[tuple[str, float]]
    unknown_score: float | None = None
    unknown: bool | None = None


def load_bundle(path: str | Path, extract_to: str | Path | None = None) -> LoadedModel:
    """Load a bundle folder or zip (as written above) with timm's own local-dir loader.

    A zip is extracted into `extract_to` when given (the caller's folder: it stays), else into a temporary folder
    that is removed as soon as the model is built (timm reads the files in create_model, not later).
    """
    path = Path(path)
    if not (path.is_file() and path.suffix == ".zip"):
        return _load_folder(path)
    if extract_to is not None:
        return _load_folder(_extract_zip(path, Path(extract_to)))
    with tempfile.TemporaryDirectory(prefix="transferlab-bundle-") as tmp:
        return _load_folder(_extract_zip(path, Path(tmp)))


def _extract_zip(zip_path: Path, target: Path) -> Path:
    """Extract a bundle zip into `target` with the dataset zips' checks; returns the folder holding config.json."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise ValueError(f"{zip_path.name} is not a valid zip archive.") from None
    with zf:
        members = safe_zip_members(zf, zip_path.name)  # slips, links, bombs
        names = [str(rel) for _, rel in members if rel.name == "config.json"]
        if not names:
            raise ValueError(f"{zip_path.name} is not a TransferLab model bundle (no config.json inside).")
        for info, rel in members:
            out = target.joinpath(*rel.parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(zf.read(info))
    return target / Path(names[0]).parent


def shipped_temperature(folder: Path) -> float:
    """The calibration temperature a bundle folder ships (config.json): Predict's probabilities are
    softmax(logits / temperature)."""
    return float(json.loads((Path(folder) / "config.json").read_text()).get("temperature", 1.0))


def _load_folder(folder: Path) -> LoadedModel:
    """Build the model from a bundle folder; everything is in memory afterwards, so the folder may go."""
    if not (folder / "config.json").exists():
        raise ValueError(f"{folder} is not a model bundle: config.json is missing.")
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    classes = list(model.pretrained_cfg.get("label_names") or
                   json.loads((folder / "config.json").read_text())["label_names"])
    data_cfg = timm.data.resolve_model_data_config(model)
    tta = json.loads((folder / "config.json").read_text()).get("tta", "off")
    return LoadedModel(model, classes, data_cfg, timm.data.create_transform(**data_cfg), shipped_temperature(folder),
                       tta=tta, unknown=load_scorer(folder / UNKNOWN_FILE))
