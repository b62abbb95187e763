"""BatchNorm while the backbone trains (cfg.batchnorm, core/models/freeze.py): 'auto' keeps the statistics of the
weights training starts from (pretrained weights or a finished run), re-estimates them from random weights; a
continued run keeps its source's statistics; and on real ants/bees and aerial scenes (slow) continuing a probe run
with full fine-tuning at 1e-5 for an epoch stays at the source's level (issue 23)."""

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

from core.config import TrainConfig
from core.engine.train import train
from core.models.freeze import apply_freeze, backbone_stages, batchnorm_mode, set_train_mode
from tests.conftest import TEST_THREADS


def batchnorms(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_the_rule_frozen_from_pretrained_weights_or_a_run_trained_from_random():
    assert batchnorm_mode(TrainConfig()) == "frozen"  # bundled ImageNet weights
    assert batchnorm_mode(TrainConfig(weights="hub")) == "frozen"
    assert batchnorm_mode(TrainConfig(weights="random")) == "train"  # random statistics: nothing to keep
    assert batchnorm_mode(TrainConfig(weights="random", init_from="runs/x")) == "frozen"  # the run's statistics
    assert batchnorm_mode(TrainConfig(batchnorm="train")) == "train"
    assert batchnorm_mode(TrainConfig(weights="random", batchnorm="frozen")) == "frozen"


@pytest.mark.parametrize("mode", ["frozen", "train"])
def test_batchnorm_layers_are_in_the_mode_the_rule_says_during_training(mode):
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=3)
    apply_freeze(model, TrainConfig(freeze="partial", trainable_stages=2))
    set_train_mode(model, mode)
    trainable = {id(p) for stage in backbone_stages(model)[-2:] for p in stage}
    bns = batchnorms(model)
    in_trainable = [m for m in bns if id(m.weight) in trainable]
    assert in_trainable and len(in_trainable) < len(bns)
    assert all(not m.training for m in bns if m not in in_trainable)  # frozen stages: always inference mode
    assert all(m.training == (mode == "train") for m in in_trainable)
    assert model.training and model.get_classifier().training  # the rest trains (dropout, head)
    assert all(m.weight.requires_grad for m in in_trainable)  # frozen statistics, but scale and shift still learn


@pytest.mark.parametrize("mode", ["auto", "train"])
def test_a_continued_run_keeps_its_sources_statistics(trained_run, tmp_path, mode, monkeypatch):
    """Full fine-tuning from a finished run: its BatchNorm statistics come out as they went in (auto), where
    re-estimating them from the training batches (train) changes every one of them. (A continuation of the same
    classes delivers its starting point unless an epoch beats it; here the fine-tuned weights are always delivered,
    so that they are what is compared.)"""
    from core.models import init_from
    monkeypatch.setattr(init_from, "same_classes", lambda *a, **k: False)
    data = TrainConfig.load(trained_run.config).data
    result = train(TrainConfig(data=data, init_from=str(trained_run.path), freeze="full", epochs=1, lr=1e-5,
                               batch_size=4, early_stopping=0, threads=TEST_THREADS, batchnorm=mode,
                               output_dir=str(tmp_path / "runs")))
    assert result.status == "completed"
    src = load_file(str(trained_run.bundle_dir / "model.safetensors"))
    got = load_file(str(Path(result.run_dir) / "bundle" / "model.safetensors"))
    stats = [k for k in src if k.endswith(("running_mean", "running_var"))]
    assert stats
    kept = [torch.equal(src[k], got[k]) for k in stats]
    assert all(kept) if mode == "auto" else not any(kept)
    rule = "BatchNorm statistics kept from the source run" if mode == "auto" else "BatchNorm statistics re-estimated"
    assert any(rule in n for n in result.summary.notes)  # said in the run summary and in the model card
    assert rule in (Path(result.run_dir) / "bundle" / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["hymenoptera", "rsscn7"])
def test_a_probe_continued_with_full_fine_tuning_stays_at_the_source_level(hymenoptera, dataset, tmp_path):
    """The issue's continuation (probe source, then --freeze full --lr 1e-5 --epochs 1) within 2 points of the
    source on ants/bees and on the aerial scenes; at 128 px to keep it short (at 224 px see docs/measurements.md)."""
    data = hymenoptera.parent / dataset
    if not data.is_dir():
        pytest.skip(f"dev set not found at {data}")
    base = dict(data=str(data), img_size=128, early_stopping=0, output_dir=str(tmp_path / "runs"))
    src = train(TrainConfig(freeze="probe", epochs=4, **base))
    cont = train(TrainConfig(init_from=src.run_dir, freeze="full", lr=1e-5, epochs=1, **base))
    assert cont.summary.val_accuracy >= src.summary.val_accuracy - 0.02, (cont.summary.val_accuracy,
                                                                         src.summary.val_accuracy)
