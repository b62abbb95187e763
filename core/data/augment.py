"""Batch preprocessing and augmentation on uint8 tensors (CPU or GPU), after images were decoded once.

Input batches are N x S x S x 3 uint8 (S = timm's resize size, e.g. 256). The eval view is timm's centre
crop; training views are random resized crops, flips and mild colour jitter done for the whole batch with
one `grid_sample`, so no per-image Python work runs in the training loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CROP_SCALE = (0.25, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = 0.2


class Preprocessor:
    """Turns uint8 NHWC batches into normalised float NCHW (channels_last) model inputs."""

    def __init__(self, data_cfg: dict, device: torch.device, channels_last: bool = True):
        self.size = int(data_cfg["input_size"][-1])
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        mean = torch.tensor(data_cfg["mean"], device=device).view(1, 3, 1, 1)
        std = torch.tensor(data_cfg["std"], device=device).view(1, 3, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std), mean / std
        self.device = device

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> normalised float NCHW; channels_last memory is free (NHWC already is)."""
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        return x.mul_(self.scale).sub_(self.shift).contiguous(memory_format=self.memory_format)

    def eval_view(self, x: torch.Tensor) -> torch.Tensor:
        s, o = x.shape[1], (x.shape[1] - self.size) // 2
        return self.to_float(x[:, o:o + self.size, o:o + self.size] if s > self.size else x)

    def train_view(self, x: torch.Tensor, preset: str, generator: torch.Generator) -> torch.Tensor:
        if preset == "none":
            return self.eval_view(x)
        if preset == "light":
            x = self.eval_view(x)
            flip = torch.rand(x.shape[0], generator=generator) < 0.5
            x[flip.to(x.device)] = x[flip.to(x.device)].flip(-1)
            return x
        return self._random_resized_crop(x, generator)

    def _random_resized_crop(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        area = torch.empty(n).uniform_(*CROP_SCALE, generator=g)
        log_r = torch.empty(n).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), generator=g)
        ratio = log_r.exp()
        w = (area * ratio).sqrt().clamp(max=1.0)  # fractions of the stored square's side
        h = (area / ratio).sqrt().clamp(max=1.0)
        cx = (torch.rand(n, generator=g) * 2 - 1) * (1 - w)
        cy = (torch.rand(n, generator=g) * 2 - 1) * (1 - h)
        flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        theta = theta.to(self.device)
        img = self.to_float(x)
        grid = F.affine_grid(theta, [n, 3, self.size, self.size], align_corners=False)
        out = F.grid_sample(img, grid.to(img.dtype), mode="bilinear", padding_mode="reflection",
                            align_corners=False)
        jitter = (1 + (torch.rand(n, 3, generator=g) * 2 - 1) * JITTER).to(self.device)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * jitter[:, 0].view(n, 1, 1, 1) + mean  # contrast
        out = out + (jitter[:, 1].view(n, 1, 1, 1) - 1)  # brightness (in normalised units)
        grey = out.mean(dim=1, keepdim=True)
        out = (out - grey) * jitter[:, 2].view(n, 1, 1, 1) + grey  # saturation
        return out.contiguous(memory_format=torch.channels_last)


def batch_mixer(mode: str, alpha: float, label_smoothing: float, num_classes: int, seed: int = 0):
    """timm's Mixup / CutMix for a training batch: (images, integer labels) -> (mixed images, soft targets with
    the label smoothing folded in); None when mode is 'off'. timm mixes a batch with its own reverse, so it needs
    an even batch: an odd last batch goes through unmixed (as one-hot soft targets). timm draws from NumPy's
    global generator, so it is seeded here: the run's seed decides the mixing too."""
    if mode == "off":
        return None
    import numpy as np
    from timm.data import Mixup
    np.random.seed(seed)
    mix = Mixup(mixup_alpha=alpha if mode in ("mixup", "both") else 0.0,
                cutmix_alpha=1.0 if mode in ("cutmix", "both") else 0.0,
                label_smoothing=label_smoothing, num_classes=num_classes)

    def apply(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(x) % 2:
            off = label_smoothing / num_classes
            return x, F.one_hot(y, num_classes).float() * (1 - label_smoothing) + off
        return mix(x, y)
    return apply


def preview(paths: list[str], data_cfg: dict, preset: str, per_image: int = 3, seed: int = 0) -> list:
    """A few augmented views of each image as uint8 HWC arrays, exactly as training would see them."""
    import numpy as np

    from core.data.images import decode_one, geometry
    pre = Preprocessor(data_cfg, torch.device("cpu"))
    g = torch.Generator().manual_seed(seed)
    u8 = torch.from_numpy(np.stack([decode_one(p, *geometry(data_cfg), exact=False) for p in paths]))
    u8 = u8.repeat_interleave(per_image, dim=0)
    with torch.no_grad():
        x = pre.train_view(u8, preset, g).float()
    x = (x + pre.shift) / pre.scale  # back to 0..255
    return [a for a in x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()]
