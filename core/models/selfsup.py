"""Self-supervised objectives: a backbone learns from unlabeled images, before it learns any labels.

Two objectives with the loop's call `objective(net, batch) -> StepOutput` (core/models/objectives.py):
- SimSiam (Chen & He, 2021): two augmented views of each image; a projector and a predictor on the pooled features;
  the negative cosine between one view's prediction and the other view's projection, with a stop-gradient on the
  projection (what keeps it from collapsing without negatives, momentum encoders or large batches).
- Reconstruct: an autoencoder. A small convolutional decoder redraws the augmented view at a quarter of its
  resolution from the backbone's last feature map (mean squared error). Not masked: hiding half of the view in
  patches (SimMIM-style) trains the BatchNorm statistics on half-blank images, and a dense CNN then computes other
  features on whole ones (measured on a 3-class variant of the test's synthetic set: a linear probe fell from 83%
  to 47% where the plain autoencoder rose to 93%; masked modelling for CNNs needs sparse convolutions, as in SparK).

`build_selfsup(name, backbone)` wraps a timm backbone built without a classifier (num_classes=0) with the heads its
objective needs; only `net.backbone` is kept afterwards (its state dict has timm's names: `--weights` loads it).
Compact implementations of the published methods, not a library (see the adaptation section of docs/decisions.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.models.objectives import StepOutput

PROJ_DIM = 512  # SimSiam's projector width (2048 in the paper on ImageNet; small sets need less)
PRED_DIM = 128  # the predictor's bottleneck (a quarter of the projection, as in the paper)
DECODER_WIDTH = 64


class SimSiamNet(nn.Module):
    """backbone -> pooled features -> projector (3 layers, BN) -> z; predictor (bottleneck MLP): z -> p."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        d = backbone.num_features
        self.projector = nn.Sequential(
            nn.Linear(d, PROJ_DIM, bias=False), nn.BatchNorm1d(PROJ_DIM), nn.ReLU(inplace=True),
            nn.Linear(PROJ_DIM, PROJ_DIM, bias=False), nn.BatchNorm1d(PROJ_DIM), nn.ReLU(inplace=True),
            nn.Linear(PROJ_DIM, PROJ_DIM, bias=False), nn.BatchNorm1d(PROJ_DIM, affine=False))
        self.predictor = nn.Sequential(
            nn.Linear(PROJ_DIM, PRED_DIM, bias=False), nn.BatchNorm1d(PRED_DIM), nn.ReLU(inplace=True),
            nn.Linear(PRED_DIM, PROJ_DIM))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.projector(self.backbone(x))
        return z, self.predictor(z)


@dataclass(frozen=True)
class SimSiam:
    """Symmetric negative cosine similarity with stop-gradient: -(cos(p1, sg(z2)) + cos(p2, sg(z1))) / 2."""

    views: int = 2

    def __call__(self, net: SimSiamNet, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        x1, x2 = batch
        z1, p1 = net(x1)
        z2, p2 = net(x2)
        loss = -(F.cosine_similarity(p1.float(), z2.detach().float()).mean()
                 + F.cosine_similarity(p2.float(), z1.detach().float()).mean()) / 2
        return StepOutput(loss, len(x1))


class ReconstructNet(nn.Module):
    """backbone's last feature map -> convolutional decoder (x2 upsampling steps) -> a quarter-resolution image."""

    def __init__(self, backbone: nn.Module, input_size: int):
        super().__init__()
        self.backbone = backbone
        with torch.no_grad():
            was = backbone.training
            probe = torch.zeros(1, 3, input_size, input_size, device=next(backbone.parameters()).device)
            fmap = backbone.eval().forward_features(probe)
            backbone.train(was)
        self.out_size = max(1, input_size // 4)
        steps = max(0, (self.out_size // fmap.shape[-1]).bit_length() - 1)  # x2 upsamplings towards out_size
        layers: list[nn.Module] = [nn.Conv2d(fmap.shape[1], DECODER_WIDTH, 1), nn.BatchNorm2d(DECODER_WIDTH),
                                   nn.ReLU(inplace=True)]
        for _ in range(steps):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(DECODER_WIDTH, DECODER_WIDTH, 3, padding=1, bias=False),
                       nn.BatchNorm2d(DECODER_WIDTH), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(DECODER_WIDTH, 3, 3, padding=1))
        self.decoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.backbone.forward_features(x))
        return F.interpolate(out, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class Reconstruct:
    """Redraw the view at a quarter resolution; loss = mean squared error in normalised units."""

    views: int = 1

    def __call__(self, net: ReconstructNet, batch: torch.Tensor) -> StepOutput:
        target = F.adaptive_avg_pool2d(batch.float(), net.out_size)
        return StepOutput(F.mse_loss(net(batch).float(), target), len(batch))


# name -> (backbone, input size) -> (the network to train: the backbone plus the objective's heads, the objective)
OBJECTIVES = {
    "simsiam": lambda backbone, size: (SimSiamNet(backbone), SimSiam()),
    "reconstruct": lambda backbone, size: (ReconstructNet(backbone, size), Reconstruct()),
}


def build_selfsup(name: str, backbone: nn.Module, input_size: int) -> tuple[nn.Module, SimSiam | Reconstruct]:
    """The network to train and its objective; `name` is a key of OBJECTIVES (TrainConfig.adapt_objective)."""
    if name not in OBJECTIVES:
        raise ValueError(f"Unknown self-supervised objective '{name}'; choose one of {', '.join(OBJECTIVES)}.")
    return OBJECTIVES[name](backbone, input_size)
