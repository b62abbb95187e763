"""The probe head's feature standardisation: train on z-scored pooled features, deliver a plain linear head.

Pooled features of different backbones and datasets differ in scale by orders of magnitude per channel, so one
learning rate cannot suit them all: on magnetic-tile defects the head trained on raw Lite0 features reached 58% in
8 epochs where a closed-form ridge probe reached 78% (docs/decisions.md). Standardising with the training
features' mean and standard deviation fixes the conditioning (deviations below the median one are raised to it:
near-constant channels would otherwise weigh their noise like signal; `python -m bench.probe_head`); folding the
two into the linear layer afterwards (w / std, b - w . mean / std) gives the same logits from raw features, so the
exported model stays a plain timm model with no extra layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

FLOOR = 1.0


@dataclass(frozen=True)
class Standardiser:
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor, floor: float = FLOOR) -> Standardiser:
        """Per-feature mean and standard deviation of the training rows (N x D); a deviation below `floor` x the
        median one is raised to it, so near-constant channels are not blown up (their noise, and the rounding of an
        int8 export, would then weigh like signal)."""
        x = x.float()
        std = x.std(0, unbiased=False)
        return cls(x.mean(0), std.clamp(min=float(std.median()) * floor + 1e-6))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:
            return x
        return ((x.float() - self.mean) / self.std).to(x.dtype)

    @torch.no_grad()
    def fold_into(self, linear: nn.Linear) -> None:
        """Make `linear` give on raw features what it gave on standardised ones."""
        w = linear.weight.float() / self.std
        linear.bias.sub_((w @ self.mean).to(linear.bias.dtype))
        linear.weight.copy_(w.to(linear.weight.dtype))

    @torch.no_grad()
    def unfold_from(self, linear: nn.Linear) -> None:
        """The inverse: make a head made for raw features (one kept from an earlier run) give the same logits on
        standardised ones, so training starts where that head was."""
        w = linear.weight.float()
        linear.bias.add_((w @ self.mean).to(linear.bias.dtype))
        linear.weight.copy_((w * self.std).to(linear.weight.dtype))
