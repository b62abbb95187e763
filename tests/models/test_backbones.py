import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from core.config import TrainConfig
from core.data.dataset import open_dataset
from core.data.images import geometry, load_image
from core.engine.train import train
from core.errors import WeightsError
from core.models import backbones
from core.models.backbones import create_model
from core.models.freeze import apply_freeze, backbone_stages, split_frozen_prefix
from tests.conftest import TEST_THREADS


def _imagenet_top1_right(hymenoptera, arch: str, weights: str = "tf_efficientnet_lite0") -> float:
    """Share of the ants/bees validation photos (every other one: 77 of 153, half the time; the outputs are
    deterministic, so the subset's figures below do not vary between runs) whose ImageNet top-1 is their class
    (ant 310, bee 309), with the bundled weights of `weights` and their ImageNet head loaded into `arch`, and
    timm's own preprocessing for `arch`."""
    model = timm.create_model(arch, num_classes=1000).eval()
    state = backbones._bundled_state_dict(model, weights)
    src = torch.load(backbones.bundled_weights_path(weights), weights_only=True)
    state["classifier.weight"], state["classifier.bias"] = src["_fc.weight"], src["_fc.bias"]
    model.load_state_dict(state)
    tf = timm.data.create_transform(**backbones.data_config(model))
    val = open_dataset(hymenoptera).val[::2]
    want = torch.tensor([{"ants": 310, "bees": 309}[("ants", "bees")[s.label]] for s in val])
    with torch.no_grad():
        top1 = torch.cat([model(torch.stack([tf(load_image(s.path)) for s in val[i:i + 32]])).argmax(1)
                          for i in range(0, len(val), 32)])
    return (top1 == want).float().mean().item()


@pytest.mark.slow  # the real backbone on 77 real photos, twice (about 8 s)
def test_bundled_weights_are_wired_into_the_architecture_they_were_trained_in(hymenoptera):
    """The package's weights are a TensorFlow port: in tf_efficientnet_lite0 (TF padding, mean = std = 0.5) they
    name the right ImageNet class for most real ant and bee photos; in the look-alike efficientnet_lite0 (the old
    wiring: loads strictly, computes another network) they do not."""
    assert _imagenet_top1_right(hymenoptera, "tf_efficientnet_lite0") >= 0.8  # measured 64/77 (130/153 on all)
    assert _imagenet_top1_right(hymenoptera, "efficientnet_lite0") < 0.7  # measured 45/77 (97/153 on all)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_larger_offline_backbones_are_real_imagenet_networks(hymenoptera, name):
    assert _imagenet_top1_right(hymenoptera, name, name) >= 0.8  # measured lite1 70/77, lite2 67/77


def test_bundled_backbones_have_packages():
    from core.config import BUNDLED_BACKBONES
    assert set(BUNDLED_BACKBONES) == set(backbones.BUNDLED_PACKAGES)
    assert all(backbones.bundled_weights_path(b).is_file() for b in BUNDLED_BACKBONES)
    assert set(backbones.OFFLINE) == set(BUNDLED_BACKBONES)  # all of them are in the catalogue


def test_preprocessing_comes_from_timm():
    model = create_model(TrainConfig(), 2)
    cfg = backbones.data_config(model)
    assert cfg["input_size"] == (3, 224, 224) and cfg["interpolation"] == "bicubic"
    assert cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)  # the TF port's normalisation, not ImageNet's
    assert geometry(cfg) == (256, 224, "bicubic")


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
    with pytest.raises(WeightsError, match="resnet.safetensors does not fit tf_efficientnet_lite0"):
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


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "mobilenetv3_small_050", "resnet18", "convnext_atto"])
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


@pytest.mark.parametrize("name", ["test_vit", "test_vit3"])  # test_vit3: fixed-size, as vit_small_patch16_224
def test_vit_runs_at_the_configured_image_size(name):
    model = create_model(TrainConfig(backbone=name, weights="random", img_size=64), 3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)


@pytest.mark.parametrize("freeze", ["partial", "probe"])
def test_vit_trains_at_another_image_size(tiny_folder, tmp_path, freeze):
    cfg = TrainConfig(data=str(tiny_folder), backbone="test_vit", weights="random", img_size=64, epochs=1,
                      batch_size=4, freeze=freeze, output_dir=str(tmp_path / "runs"), threads=TEST_THREADS)
    assert train(cfg, []).status == "completed"


def test_vit_weights_file_from_another_image_size_is_resampled(tmp_path):
    made = timm.create_model("test_vit3", num_classes=2)  # built for 160 px: a 10 x 10 patch grid
    save_file(made.state_dict(), tmp_path / "vit160.safetensors")
    cfg = TrainConfig(backbone="test_vit3", weights=str(tmp_path / "vit160.safetensors"), img_size=64)
    model = create_model(cfg, 2).eval()
    assert torch.equal(model.blocks[0].attn.qkv.weight, made.blocks[0].attn.qkv.weight)
    assert torch.allclose(model.pos_embed, resample_abs_pos_embed(made.pos_embed, [4, 4], num_prefix_tokens=1))
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 2)
