"""Freezing: which backbone stages train (the freeze policy), BatchNorm in frozen stages, parameter counts, and
the frozen prefix that partial freezing computes once (split_frozen_prefix)."""

from __future__ import annotations

import timm
import torch
from torch import nn

from core.config import TrainConfig


def backbone_stages(model: nn.Module) -> list[list[nn.Parameter]]:
    """Parameter groups of the backbone from first to last (timm's coarse group matcher), head excluded."""
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    groups = timm.models.group_parameters(model, model.group_matcher(coarse=True))
    named = dict(model.named_parameters())
    stages = [[named[n] for n in names if id(named[n]) not in head_ids] for names in groups.values()]
    return [s for s in stages if s]


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(model.get_classifier().parameters())


def apply_freeze(model: nn.Module, cfg: TrainConfig, epoch: int = 0) -> int:
    """Set requires_grad by the freeze policy for this epoch; returns the number of trainable stages."""
    stages = backbone_stages(model)
    if cfg.freeze == "auto":
        raise ValueError("freeze 'auto' has no stages of its own: the advisor replaces it before training.")
    n = {"probe": 0, "partial": cfg.trainable_stages, "full": len(stages),
         "gradual": epoch * cfg.unfreeze_per_epoch}[cfg.freeze]
    n = min(n, len(stages))
    for i, stage in enumerate(stages):
        for p in stage:
            p.requires_grad_(i >= len(stages) - n)
    for p in head_parameters(model):
        p.requires_grad_(True)
    return n


def batchnorm_mode(cfg: TrainConfig) -> str:
    """'frozen' or 'train': cfg.batchnorm with 'auto' resolved (frozen, except from random weights)."""
    if cfg.batchnorm != "auto":
        return cfg.batchnorm
    return "train" if cfg.weights == "random" and not cfg.init_from else "frozen"


def batchnorm_note(cfg: TrainConfig) -> str | None:
    """The BatchNorm rule this run followed, for its summary and model card (None for a probe: nothing trains)."""
    if cfg.freeze == "probe":
        return None
    if batchnorm_mode(cfg) == "frozen":
        start = "the source run" if cfg.init_from else f"the {cfg.weights} weights"
        return (f"BatchNorm statistics kept from {start} (inference mode while the backbone trained; their scale and "
                f"shift trained): re-estimated from small training batches they cost accuracy (docs/decisions.md).")
    why = "random weights have none to keep" if cfg.batchnorm == "auto" else "batchnorm: train"
    return f"BatchNorm statistics re-estimated from the training batches in the trainable stages ({why})."


def set_train_mode(model: nn.Module, batchnorm: str = "frozen") -> None:
    """model.train(), but BatchNorm layers keep the statistics of the weights training started from (eval mode):
    all of them with batchnorm="frozen", those of frozen stages only with "train" (see batchnorm_mode)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
                batchnorm == "frozen" or (m.weight is not None and not m.weight.requires_grad)):
            m.eval()


def describe_freeze(cfg: TrainConfig, num_classes: int = 2) -> dict:
    """Trainable / total parameters and stage count for a config, before training (builds the model once)."""
    model = timm.create_model(cfg.backbone, pretrained=False, num_classes=num_classes)
    n_stages = apply_freeze(model, cfg, epoch=0)
    trainable, total = parameter_counts(model)
    return {"trainable": trainable, "total": total, "trainable_stages": n_stages,
            "stages": len(backbone_stages(model))}


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


# ---------------------------------------------------------------------------------------------------------
# frozen prefix (partial freezing): computed once, cached like features

def split_frozen_prefix(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(prefix, rest) where prefix is the frozen start of the network and rest(prefix(x)) == model(x).

    For the timm families whose forward_features is a plain chain of modules (EfficientNet incl. the bundled
    tf_efficientnet_lite0, MobileNetV3, ResNet, ConvNeXt); None for others (ViT adds position embeddings between
    its modules) or when nothing with weights is frozen. The prefix must run in eval mode, which is what training does
    with it anyway: its BatchNorm layers are frozen (see set_train_mode).
    """
    chain = _feature_chain(model)
    if chain is None:
        return None
    k = 0
    while k < len(chain) and all(not p.requires_grad for p in chain[k].parameters()):
        k += 1
    if not any(True for m in chain[:k] for _ in m.parameters()):
        return None
    return nn.Sequential(*chain[:k]), _Rest(model, chain[k:])


def _feature_chain(model: nn.Module) -> list[nn.Module] | None:
    """The modules model.forward_features applies, in order (checked against timm 1.0's code by a test)."""
    if getattr(model, "grad_checkpointing", False):
        return None
    m = timm.models
    if isinstance(model, m.efficientnet.EfficientNet):
        return [model.conv_stem, model.bn1, *model.blocks, model.conv_head, model.bn2]
    if isinstance(model, m.mobilenetv3.MobileNetV3):
        return [model.conv_stem, model.bn1, *model.blocks]
    if isinstance(model, m.resnet.ResNet):
        return [model.conv1, model.bn1, model.act1, model.maxpool, model.layer1, model.layer2, model.layer3,
                model.layer4]
    if isinstance(model, m.convnext.ConvNeXt):
        return [model.stem, *model.stages, model.norm_pre]
    return None


class _Rest(nn.Module):
    """The network after a cached prefix: the remaining feature modules, then the model's own head."""

    def __init__(self, model: nn.Module, modules: list[nn.Module]):
        super().__init__()
        self.features = nn.Sequential(*modules)
        # registered, so train()/eval() reach the head's dropout and the optimizer sees the same parameters as
        # for the whole model (the prefix's are frozen and get no gradients)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.features(x))


class PooledAndLogits(nn.Module):
    """(logits, pooled features) of a timm model in one pass: what the summary scores and what predictions.npz
    keeps. With `trunk` (the network after a cached frozen prefix), the input is the prefix's output."""

    def __init__(self, model: nn.Module, trunk: nn.Module | None = None):
        super().__init__()
        self.model, self.trunk = model, trunk

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.trunk(x) if self.trunk is not None else self.model.forward_features(x)
        pooled = self.model.forward_head(maps, pre_logits=True)
        return self.model.get_classifier()(pooled), pooled
