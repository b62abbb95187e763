"""Start from a finished run: read a run folder, its bundle folder or an exported bundle zip, and build a model
whose backbone comes from it, with its preprocessing, and whose head is kept when the classes are the same.

A source holds what its bundle holds (core/export/bundle.py): config.json (architecture, label names, the data
config), model.safetensors, and summary.json / config.yaml / record.json for its lineage: the chain of weights
that led to it ("ImageNet (tf_efficientnet_lite0, bundled weights)", "run <id> on <dataset>", ...). Nothing is
extracted: a zip's members are read in memory after the same safety checks as dataset zips.

Head rules: the same class names (in any order) keep the source's head, its rows reordered by name, so training
simply goes on with new data; other class names get a new (zero) head. Copying the rows of the classes both have
into that new head was measured and is not done: from a 4-class blood-cell probe (pbc_blood), 20 images per class,
5 probe epochs, 2 seeds, it helped a 2-class set sharing one class (final 93/93% vs 88/90%) and hurt a 4-class set
sharing two (79.5/77% vs 81/80.5%; first epoch 54.5/56.5% vs 53.5/70%): the copied rows start ahead of the zero
rows of the new classes, and the model leans towards the old classes.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from core.config import TrainConfig
from core.errors import ConfigError, DatasetError, WeightsError
from core.files.digest import bytes_digest
from core.files.zips import safe_zip_members
from core.models.weights import fit_position_embeddings, load_backbone_state, timm_create

BUNDLE_FILES = ("config.json", "model.safetensors")
OPTIONAL_FILES = ("summary.json", "config.yaml", "record.json")
DATA_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
WHAT_TO_GIVE = ("Give a finished run's folder (runs/<run id>), its bundle folder, or an exported bundle .zip "
                "(Export page or `python -m core export`).")


@dataclass(frozen=True)
class Source:
    """A finished run (or its exported bundle) as a starting point."""

    path: Path  # as given
    name: str  # the run id when known, else the folder or zip name
    architecture: str  # the timm model name
    classes: list[str]
    data_cfg: dict  # its preprocessing: input size, mean, std, interpolation, crop
    lineage: list[str]  # oldest first, ending with the source run itself
    weights: bytes | None  # model.safetensors (None when read without weights)
    digest: str  # content hash of model.safetensors: the feature cache's key for these weights

    @property
    def input_size(self) -> int:
        return int(self.data_cfg["input_size"][-1])

    def state_dict(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load as load_safetensors
        try:
            return load_safetensors(self.weights)
        except Exception as exc:
            raise WeightsError(f"The weights of {self.path} could not be read ({type(exc).__name__}); the file "
                               f"is damaged. Export the run again, or choose another run.") from None


def read_source(path: str | Path, weights: bool = True) -> Source:
    """The source at `path`; a ConfigError naming the path and what to give instead when it is not one."""
    p = Path(path).expanduser()
    files, folder_name = _open_bundle(p)
    try:
        config = json.loads(files["config.json"]())
        architecture, classes = config["architecture"], list(config["label_names"])
        data_cfg = {k: tuple(v) if isinstance(v, list) else v  # JSON lists back to timm's tuples
                    for k, v in config["pretrained_cfg"].items() if k in DATA_KEYS}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"init_from: {p} holds a config.json that is not a TransferLab bundle's (missing "
                          f"{exc}). {WHAT_TO_GIVE}") from None
    blob = files["model.safetensors"]()
    name = str(_json(files, "record.json").get("run_id") or folder_name)
    return Source(p, name, architecture, classes, data_cfg, _source_lineage(name, files), blob if weights else None,
                  bytes_digest(blob))


def _open_bundle(p: Path) -> tuple[dict[str, Callable[[], bytes]], str]:
    """(file name -> reader of the bundle's files present, the run's folder name); a ConfigError unless p is a
    finished run, a bundle folder or a bundle zip."""
    if not p.exists():
        raise ConfigError(f"init_from: {p} does not exist. {WHAT_TO_GIVE}")
    if p.is_file():
        return _zip_members(p)
    folder = p / "bundle" if (p / "config.yaml").is_file() and not (p / "config.json").is_file() else p
    missing = [f for f in BUNDLE_FILES if not (folder / f).is_file()]
    if missing and folder != p:  # a run folder without its bundle: it never finished
        status = _read_json(p / "status.json").get("status", "unknown")
        raise ConfigError(f"init_from: run {p.name} has no model to start from (status: {status}; no bundle/"
                          f"{missing[0]}): it did not finish. Resume it (`python -m core train --resume {p}`) or "
                          f"choose a finished run.")
    if missing:
        raise ConfigError(f"init_from: {p} is neither a run folder nor a model bundle (no {missing[0]}). "
                          f"{WHAT_TO_GIVE}")
    readers = {f: (lambda q=folder / f: q.read_bytes()) for f in (*BUNDLE_FILES, *OPTIONAL_FILES)
               if (folder / f).is_file()}
    return readers, p.parent.name if p.name == "bundle" else p.name


def _zip_members(p: Path) -> tuple[dict[str, Callable[[], bytes]], str]:
    if p.suffix.lower() != ".zip":
        raise ConfigError(f"init_from: {p} is a file but not a bundle .zip. {WHAT_TO_GIVE}")
    try:
        with zipfile.ZipFile(p) as zf:
            members = safe_zip_members(zf, p.name)  # slips, links, bombs
            top = next((rel.parent for _, rel in members if rel.name == "config.json"), None)
            found = {rel.name: info for info, rel in members if top is not None and rel.parent == top}
            missing = [f for f in BUNDLE_FILES if f not in found]
            if missing:
                raise ConfigError(f"init_from: {p} is not a TransferLab model bundle (no {missing[0]} inside). "
                                  f"{WHAT_TO_GIVE}")
            data = {f: zf.read(found[f]) for f in (*BUNDLE_FILES, *OPTIONAL_FILES) if f in found}
    except zipfile.BadZipFile:
        raise ConfigError(f"init_from: {p} is not a valid zip archive. {WHAT_TO_GIVE}") from None
    except DatasetError as exc:  # the zip checks speak of datasets; the problem is the same
        raise ConfigError(f"init_from: {exc}") from None
    return {k: (lambda v=v: v) for k, v in data.items()}, top.name or p.stem  # export_zip: <run id>/<file>


def _source_lineage(name: str, files: dict[str, Callable[[], bytes]]) -> list[str]:
    """The source's own lineage from its summary; runs from before lineages are reconstructed from their config."""
    summary = _json(files, "summary.json")
    if summary.get("lineage"):
        return list(summary["lineage"])
    try:
        cfg = yaml.safe_load(files["config.yaml"]()) if "config.yaml" in files else {}
    except yaml.YAMLError:
        cfg = {}
    cfg = cfg if isinstance(cfg, dict) else {}
    start = origin(cfg.get("backbone", "?"), cfg.get("weights", "?"), cfg.get("seed", 0))
    return [start, f"run {name} on {summary.get('dataset') or 'an unknown dataset'}"]


def _json(files: dict[str, Callable[[], bytes]], name: str) -> dict:
    try:
        data = json.loads(files[name]()) if name in files else {}
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


# -------------------------------------------------------------------------------------------------------
# lineage

def origin(backbone: str, weights: str, seed: int = 0) -> str:
    """The first step of a lineage: where the weights of a run that did not start from another run came from."""
    if weights == "bundled":
        return f"ImageNet ({backbone}, bundled weights)"
    if weights == "hub":
        return f"ImageNet ({backbone}, timm hub weights)"
    if weights == "random":
        return f"random initialisation ({backbone}, seed {seed})"
    return f"weights file {Path(weights).name} ({backbone})"


def run_lineage(cfg: TrainConfig, run_id: str, dataset: str) -> list[str]:
    """This run's chain of weights, oldest first, ending with the run itself."""
    before = read_source(cfg.init_from, weights=False).lineage if cfg.init_from else \
        [origin(cfg.backbone, cfg.weights, cfg.seed)]
    return [*before, f"run {run_id} on {dataset}"]


# -------------------------------------------------------------------------------------------------------
# configuration and model

def resolve(cfg: TrainConfig) -> TrainConfig:
    """cfg with the source's architecture as its backbone (the default backbone counts as not chosen); a
    ConfigError when another backbone was chosen. Reads the source, so a bad path is an error here."""
    if not cfg.init_from:
        return cfg
    src = read_source(cfg.init_from, weights=False)
    if cfg.backbone == src.architecture:
        return cfg
    if cfg.backbone != TrainConfig.__dataclass_fields__["backbone"].default:
        raise ConfigError(f"init_from: run {src.name} is a {src.architecture}, but backbone is {cfg.backbone}. "
                          f"Starting from a run keeps its backbone: set backbone to {src.architecture} (or leave "
                          f"it out), or start from pretrained weights instead.")
    return cfg.replace(backbone=src.architecture)


def create_from_source(cfg: TrainConfig, num_classes: int, classes: list[str] | None = None) -> nn.Module:
    """The source's network with a num_classes head: the source's own head (rows matched by class name) when
    `classes` are the source's classes, else a zero head. Its preprocessing becomes the model's (timm's
    pretrained_cfg), so data_config() and the exported bundle follow the source unless cfg.img_size is set."""
    src = read_source(cfg.init_from)
    if cfg.backbone != src.architecture:
        raise ConfigError(f"init_from: run {src.name} is a {src.architecture}, not a {cfg.backbone}; resolve the "
                          f"config first (core.models.init_from.resolve).")
    model = timm_create(src.architecture, cfg.img_size or src.input_size, pretrained=False, num_classes=num_classes)
    state = fit_position_embeddings(model, src.state_dict(), f"run {src.name}")
    load_backbone_state(model, state, f"run {src.name}")
    model.pretrained_cfg = model.default_cfg = {**model.pretrained_cfg, **src.data_cfg}
    _init_head(model, state, src.classes, classes)
    return model


def same_classes(source: list[str], target: list[str] | None) -> bool:
    return target is not None and sorted(source) == sorted(target) and len(set(target)) == len(target)


def _init_head(model: nn.Module, state: dict[str, torch.Tensor], src_classes: list[str],
               classes: list[str] | None) -> None:
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        return
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    if not same_classes(src_classes, classes):
        return  # a new task: a new head (copying shared classes' rows was measured: see the module docstring)
    prefix = model.pretrained_cfg["classifier"]
    weight, bias = state.get(f"{prefix}.weight"), state.get(f"{prefix}.bias")
    if weight is None or weight.shape != (len(src_classes), head.in_features):
        raise WeightsError(f"The source's head does not fit ({prefix}.weight "
                           f"{None if weight is None else tuple(weight.shape)}); choose another run.")
    rows = torch.tensor([src_classes.index(c) for c in classes])  # matched by name: any order
    with torch.no_grad():
        head.weight.copy_(weight[rows])
        if bias is not None:
            head.bias.copy_(bias[rows])


def start_note(cfg: TrainConfig, classes: list[str]) -> str:
    """What starting from cfg.init_from did, for the run's notes."""
    src = read_source(cfg.init_from, weights=False)
    head = "its head kept (the same classes)" if same_classes(src.classes, classes) else \
        f"a new head (its classes were {', '.join(src.classes)})"
    size = f"{cfg.img_size} px (set here; the run used {src.input_size})" if cfg.img_size and \
        cfg.img_size != src.input_size else f"{src.input_size} px as it was"
    return f"Started from run {src.name} ({src.architecture}): its backbone, {head}, input {size}."


