"""Build a timm network and load a state dict into its backbone, checking every tensor: what pretrained weights
(backbones.py) and a finished run's weights (init_from.py) share.
"""

from __future__ import annotations

import math

import timm
import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from core.errors import WeightsError


def timm_create(name: str, img_size: int, **kwargs) -> nn.Module:
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


def fit_position_embeddings(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
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


def load_backbone_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
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
