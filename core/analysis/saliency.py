"""Saliency maps: where in the image the evidence for a class lies, by Grad-CAM (Selvaraju et al., 2017).

timm models split into forward_features (the last convolutional feature map, N x C x h x w) and forward_head,
so Grad-CAM needs no hooks: keep the feature map, back-propagate the class score to it, weight each channel by
its mean gradient, sum, ReLU, upsample. A dozen lines did not justify the `grad-cam` package, which pulls in
OpenCV and matplotlib. Models whose features are not a 4-D map (vision transformers) get a clear error.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

# A perceptually ordered blue -> cyan -> yellow -> red ramp for the overlay (no matplotlib needed).
_RAMP = np.array([[0, 0, 130], [0, 90, 255], [0, 220, 255], [120, 255, 120], [255, 220, 0], [255, 60, 0],
                  [160, 0, 0]], dtype=np.float32)


def grad_cam(model: nn.Module, x: torch.Tensor, class_idx: int | None = None) -> tuple[np.ndarray, int, np.ndarray]:
    """Heat-map (H x W floats in 0..1, the input's size) for class_idx (default: the predicted class) of one
    preprocessed image x (1 x 3 x H x W), the class used, and the class probabilities."""
    model.eval()
    with torch.enable_grad():
        feats = model.forward_features(x)
        if feats.ndim != 4:
            raise ValueError("Saliency maps need a convolutional backbone (this model's features are not a 2-D "
                             "map); choose an EfficientNet, MobileNet, ResNet or ConvNeXt backbone.")
        feats = feats.detach().requires_grad_(True)
        logits = model.forward_head(feats)
        probs = logits.softmax(-1)[0].detach().numpy()
        cls = int(probs.argmax()) if class_idx is None else int(class_idx)
        (grad,) = torch.autograd.grad(logits[0, cls], feats)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * feats.detach()).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0].numpy()
    peak = cam.max()
    return (cam / peak if peak > 0 else cam), cls, probs


def colorize(heat: np.ndarray) -> np.ndarray:
    """H x W in 0..1 -> H x W x 3 uint8 along _RAMP."""
    pos = np.clip(heat, 0, 1) * (len(_RAMP) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(_RAMP) - 1)
    frac = (pos - lo)[..., None]
    return (_RAMP[lo] * (1 - frac) + _RAMP[hi] * frac).astype(np.uint8)


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The heat-map blended over the image (resized to the image, so the whole photo shows)."""
    image = image.convert("RGB")
    heat_img = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8)).resize(image.size, Image.BILINEAR)
    colors = Image.fromarray(colorize(np.asarray(heat_img, dtype=np.float32) / 255))
    return Image.blend(image, colors, alpha)


def saliency_for_image(model: nn.Module, transform, image: Image.Image,
                       class_idx: int | None = None) -> tuple[Image.Image, int, np.ndarray]:
    """Overlay image, class shown, and probabilities for one PIL image with the model's eval transform.

    The heat-map is computed on the transform's centre crop; it is pasted back over that crop's place in the
    resized photo so the picture shown is the one the model saw."""
    x = transform(image.convert("RGB")).unsqueeze(0)
    heat, cls, probs = grad_cam(model, x, class_idx)
    return overlay(_model_view(x), heat), cls, probs


def _model_view(x: torch.Tensor) -> Image.Image:
    """The preprocessed crop back as a picture (min-max stretched per image: mean/std vary by backbone)."""
    arr = x[0].permute(1, 2, 0).numpy()
    arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-8)
    return Image.fromarray((arr * 255).astype(np.uint8))
