"""Where a model's starting weights come from: bundled, hub, a weights file, or a finished run.

The choice lives in the config (`weights`, `init_from`); this module reads it back as one of the sources, and
turns a new choice into the config changes that make it. The Model page draws these rules; they live here so that
they can be tested without a browser.
"""

from __future__ import annotations

from pathlib import Path

from core.config import BUNDLED_BACKBONES, WEIGHT_FILE_SUFFIXES, TrainConfig
from core.models.backbones import create_model
from core.models.init_from import Source, read_source

FROM_RUN = "finished run"
SOURCE_HELP = ("bundled: ships with the app (offline). hub: downloaded from Hugging Face (needs network). file: "
               "your own .safetensors/.pth. finished run: go on from a model trained here.")


def sources_for(backbone: str) -> list[str]:
    """The sources a backbone can start from: bundled weights only for the backbones whose weights ship."""
    return (["bundled", "hub", "file"] if backbone in BUNDLED_BACKBONES else ["hub", "file"]) + [FROM_RUN]


def current_source(cfg: TrainConfig) -> str:
    if cfg.init_from:
        return FROM_RUN
    return cfg.weights if cfg.weights in ("bundled", "hub") else "file"


def weights_for(cfg: TrainConfig, source: str) -> str | None:
    """The `weights` value a source means for this config: the keyword, or for 'file' the file the config already
    names (None when it names none: one must be uploaded); a finished run keeps the config's own."""
    if source == "file":
        return cfg.weights if cfg.weights.lower().endswith(WEIGHT_FILE_SUFFIXES) else None
    return cfg.weights if source == FROM_RUN else source


def check_weights_file(backbone: str, path: str | Path) -> None:
    """Raise WeightsError with a sentence unless the file's weights fit the backbone: said at once, not as a
    failed training later."""
    create_model(TrainConfig(backbone=backbone, weights=str(path)), 2)


def pretrained_changes(cfg: TrainConfig, backbone: str, weights: str | None) -> dict:
    """The config changes for starting `backbone` from pretrained `weights` (no longer from a run). None for
    weights: a file is still to be uploaded, so the config keeps its own; {} when there is nothing to change."""
    if not (weights or cfg.init_from):
        return {}
    return {"backbone": backbone, "init_from": "", **({"weights": weights} if weights else {})}


def run_changes(path: str | Path) -> tuple[dict, Source]:
    """The config changes for starting from the finished run (run folder, bundle folder or bundle .zip) at path,
    and the run as read; a ConfigError naming the path when it is none. Its backbone comes with it."""
    src = read_source(path, weights=False)
    return {"init_from": str(path), "backbone": src.architecture}, src


def describe_run_source(src: Source) -> str:
    return (f"Backbone {src.architecture} at {src.input_size} px from run {src.name} (classes "
            f"{', '.join(src.classes)}): its head is kept when your classes are the same, else a new one is "
            f"trained. Lineage: {' -> '.join(src.lineage)} -> this run.")
