"""Test-time augmentation: a prediction from the image and its mirror image, averaged.

The two views' probabilities are averaged, and returned as their logarithm: log-probabilities are logits (softmax
gives the mean back), so everything downstream of logits (cross-entropy, the calibration temperature, top-k) works
on them unchanged. The mirror is a flip of the width axis, as the probe's second view (core/models/features.py)."""

from __future__ import annotations

import math

import torch


def mirror(x: torch.Tensor) -> torch.Tensor:
    """An NCHW batch mirrored left to right."""
    return torch.flip(x, dims=[-1])


def mean_of_views(*logits: torch.Tensor) -> torch.Tensor:
    """log of the mean of the views' softmax probabilities (a logit per class, N x classes)."""
    log_probs = torch.stack([lg.float().log_softmax(-1) for lg in logits])
    return torch.logsumexp(log_probs, dim=0) - math.log(len(logits))
