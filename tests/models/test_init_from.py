"""Starting from a finished run (init_from): the head kept for the same classes and new for others, a run folder, a
bundle folder or a zip as the source, clear errors otherwise, the source's features in the cache (never
ImageNet's), its lineage in the model card and config.yaml, resume, the advisor; and real ants/bees (slow)."""

import json
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.analysis.predictions import load_predictions
from core.config import TrainConfig
from core.data.dataset import open_dataset
from core.engine.callbacks import Callback
from core.engine.train import train
from core.errors import ConfigError
from core.export.bundle import export_zip
from core.models.backbones import create_model, data_config
from core.models.features import model_key, weights_digest
from core.models.init_from import read_source
from core.runs import RunDir, Status, create_run_dir
from tests.conftest import COLORS, TEST_THREADS, make_image


def colour_folder(root: Path, colours: dict[str, tuple[int, int, int]], seeds: range) -> Path:
    for name, colour in colours.items():
        for i in seeds:
            make_image(root / name / f"{name}_{i}.png", colour, seed=i)
    return root


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A finished run that learned the three colours (a full fine-tune: its backbone is no longer the initial one)."""
    tmp = tmp_path_factory.mktemp("source")
    cfg = TrainConfig(data=str(colour_folder(tmp / "colours-a", COLORS, range(8))), backbone="test_efficientnet",
                      weights="random", img_size=64, freeze="full", epochs=6, augmentation="none", lr=3e-3,
                      backbone_lr_mult=1.0, batch_size=4, early_stopping=0, threads=TEST_THREADS,
                      output_dir=str(tmp / "runs"))
    result = train(cfg)
    assert result.summary.val_accuracy == 1.0
    return Path(result.run_dir)


def continue_cfg(data: Path, src: Path | str, tmp_path: Path, **kw) -> TrainConfig:
    """No backbone, weights or img_size: they come from the source."""
    return TrainConfig(**{**dict(data=str(data), init_from=str(src), freeze="partial", epochs=1, batch_size=4,
                                 lr=1e-3, early_stopping=0, threads=TEST_THREADS,
                                 output_dir=str(tmp_path / "runs")), **kw})


def head(model) -> tuple[torch.Tensor, torch.Tensor]:
    c = model.get_classifier()
    return c.weight.detach(), c.bias.detach()


def test_same_classes_with_new_images_go_on_at_the_source_level(source, tmp_path):
    new = colour_folder(tmp_path / "colours-b", COLORS, range(100, 110))  # other pictures, same classes
    cfg = continue_cfg(new, source, tmp_path)
    src_state = load_file(str(source / "bundle" / "model.safetensors"))
    # the head is the source's: in its order, and rows matched by name when the order differs
    w, b = head(create_model(cfg.replace(backbone="test_efficientnet"), 3, ["blue", "green", "red"]))
    assert torch.equal(w, src_state["classifier.weight"]) and torch.equal(b, src_state["classifier.bias"])
    w, _ = head(create_model(cfg.replace(backbone="test_efficientnet"), 3, ["red", "blue", "green"]))
    assert torch.equal(w, src_state["classifier.weight"][[2, 0, 1]])

    result = train(cfg)
    first = RunDir(Path(result.run_dir)).read_metrics()[0]
    assert first["val_acc"] == 1.0  # the source's level after one epoch (chance is 1/3)
    assert result.summary.backbone == "test_efficientnet"  # taken from the source
    assert any("its head kept" in n for n in result.summary.notes)
    # preprocessing follows the source (64 px), as the exported bundle says
    bundle_cfg = json.loads((Path(result.run_dir) / "bundle" / "config.json").read_text())
    assert bundle_cfg["pretrained_cfg"]["input_size"] == [3, 64, 64]


def test_a_probe_from_a_run_starts_with_its_head_as_it_was(source, tmp_path):
    """The probe trains its head on standardised features: the kept head is carried into that space first, so with
    a learning rate too small to change it the first epoch scores what the source scored."""
    new = colour_folder(tmp_path / "colours-b", COLORS, range(100, 110))
    result = train(continue_cfg(new, source, tmp_path, freeze="probe", lr=1e-6))
    first = RunDir(Path(result.run_dir)).read_metrics()[0]
    assert first["val_acc"] == 1.0
    # and the delivered head (back on raw features) is the source's, moved by no more than lr x steps
    src = load_file(str(source / "bundle" / "model.safetensors"))
    got = load_file(str(Path(result.run_dir) / "bundle" / "model.safetensors"))
    for k in ("classifier.weight", "classifier.bias"):
        assert torch.allclose(got[k], src[k], atol=1e-3), k


def test_other_classes_get_a_new_head_and_train(source, tmp_path):
    other = colour_folder(tmp_path / "other", {"green": COLORS["green"], "yellow": (220, 220, 40)}, range(8))
    cfg = continue_cfg(other, source, tmp_path, epochs=3, augmentation="none", lr=1e-2)
    w, b = head(create_model(cfg.replace(backbone="test_efficientnet"), 2, ["green", "yellow"]))
    assert w.shape[0] == 2 and not w.any() and not b.any()  # a new, zero head: no rows copied
    result = train(cfg)
    assert result.status == "completed" and result.summary.classes == ["green", "yellow"]
    assert result.summary.val_accuracy == 1.0
    assert any("a new head (its classes were blue, green, red)" in n for n in result.summary.notes)


def test_a_bundle_folder_and_a_bundle_zip_are_sources_too(source, tmp_path):
    zipped = export_zip(RunDir(source))
    moved = Path(shutil.copy(zipped, tmp_path / "exported.zip"))  # a zip downloaded and kept elsewhere
    from_run, from_folder, from_zip = (read_source(p) for p in (source, source / "bundle", moved))
    assert from_run.digest == from_folder.digest == from_zip.digest
    assert from_zip.name == from_run.name == source.name  # the run id, from record.json
    assert from_zip.classes == ["blue", "green", "red"] and from_zip.architecture == "test_efficientnet"
    assert from_zip.state_dict().keys() == from_run.state_dict().keys()
    result = train(continue_cfg(colour_folder(tmp_path / "c", COLORS, range(20, 26)), moved, tmp_path,
                                freeze="probe", epochs=2))
    assert result.summary.val_accuracy == 1.0
    assert TrainConfig.load(Path(result.run_dir) / "bundle" / "config.yaml").init_from == "exported.zip"
    assert TrainConfig(init_from=str(source / "bundle")).portable().init_from == f"{source.name}/bundle"


def test_what_is_not_a_finished_run_is_refused_with_a_sentence(source, tmp_path):
    unfinished = create_run_dir(tmp_path / "runs")
    TrainConfig().save(unfinished.config)
    unfinished.write_status(Status.RUNNING)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as zf:
        zf.writestr("photos/a.jpg", b"not a model")
    cases = {tmp_path / "missing": "does not exist", tmp_path / "notes.txt": "not a bundle .zip",
             tmp_path / "empty": "neither a run folder nor a model bundle",
             tmp_path / "photos.zip": "not a TransferLab model bundle (no config.json inside)",
             unfinished.path: f"run {unfinished.run_id} has no model to start from"}
    for path, message in cases.items():
        with pytest.raises(ConfigError, match="init_from") as err:
            train(continue_cfg(tmp_path, path, tmp_path))
        assert str(path.name) in str(err.value) and message in str(err.value), str(err.value)
    assert "Resume it" in str(pytest.raises(ConfigError, read_source, unfinished.path).value)
    with pytest.raises(ConfigError, match="is a test_efficientnet, but backbone is resnet18"):
        train(continue_cfg(tmp_path, source, tmp_path, backbone="resnet18"))


def test_a_probe_from_a_run_uses_its_features_never_the_initial_ones(source, tmp_path):
    """The machine-wide feature cache is keyed by the weights' content: a probe started from a run must not reuse
    features cached for the weights that run started from (same backbone, same images, same preprocessing)."""
    data = source.parent.parent / "colours-a"
    initial = TrainConfig.load(source / "config.yaml").replace(freeze="probe", epochs=1,
                                                               output_dir=str(tmp_path / "runs"))
    train(initial)  # fills the cache with the initial (random, seed 0) weights' features of these images
    cfg = continue_cfg(data, source, tmp_path, freeze="probe", epochs=1).replace(backbone="test_efficientnet")
    model = create_model(cfg, 3)
    key = model_key(cfg.backbone, cfg.weights, weights_digest(cfg), data_config(model))
    assert weights_digest(cfg) == "init-from-" + read_source(source).digest
    assert key != model_key(initial.backbone, initial.weights, weights_digest(initial), data_config(model))
    probe = train(cfg)
    # the probe's validation features are the source network's (as the source computed them in torch)
    got = load_predictions(Path(probe.run_dir) / "predictions.npz").splits["val"].features
    want = load_predictions(source / "predictions.npz").splits["val"].features
    assert np.allclose(got, want, atol=1e-3)
    assert probe.summary.val_accuracy == 1.0


def test_lineage_of_a_chain_of_two_runs_in_the_card_config_and_record(source, tmp_path):
    second = train(continue_cfg(colour_folder(tmp_path / "b", COLORS, range(30, 36)), source, tmp_path,
                                freeze="probe"))
    third = train(continue_cfg(colour_folder(tmp_path / "c", COLORS, range(40, 46)), second.run_dir, tmp_path,
                               freeze="probe"))
    second_id, third_id = Path(second.run_dir).name, Path(third.run_dir).name
    steps = ["random initialisation (test_efficientnet, seed 0)", f"run {source.name} on colours-a",
             f"run {second_id} on b", f"run {third_id} on c"]
    assert third.summary.lineage == steps
    bundle = Path(third.run_dir) / "bundle"
    card = (bundle / "README.md").read_text()
    assert "## Lineage\n\n" + " -> ".join(steps[:3]) + f" -> **this model** (run {third_id} on c)" in card
    config_yaml = (bundle / "config.yaml").read_text()
    assert config_yaml.startswith("# lineage: " + " -> ".join(steps) + "\n")
    assert TrainConfig.from_yaml(config_yaml).init_from == second_id  # by name only: it leaves the server
    record = json.loads((bundle / "record.json").read_text())
    assert record["provenance"][0]["step"] == "started from"
    assert record["provenance"][0]["source"] == f"TransferLab run {second_id} on b"


class StopAfterFirstEpoch(Callback):
    def __init__(self, stop: threading.Event):
        self.stop = stop

    def on_epoch_end(self, m):
        self.stop.set()


def test_a_run_started_from_a_run_resumes(source, tmp_path):
    stop = threading.Event()
    cfg = continue_cfg(colour_folder(tmp_path / "b", COLORS, range(50, 56)), source, tmp_path, epochs=3)
    first = train(cfg, [StopAfterFirstEpoch(stop)], stop=stop)
    run = RunDir(Path(first.run_dir))
    assert first.status == "stopped" and [m["epoch"] for m in run.read_metrics()] == [1]
    again = train(TrainConfig.load(run.config), run=run, resume=True)
    assert again.status == "completed" and [m["epoch"] for m in run.read_metrics()] == [1, 2, 3]
    assert again.summary.lineage[-2:] == [f"run {source.name} on colours-a", f"run {run.run_id} on b"]


def test_auto_probes_the_source_runs_features(tmp_path, tiny_folder):
    from core.plan.advisor import advise
    lite = train(TrainConfig(data=str(tiny_folder), freeze="probe", epochs=1, img_size=64, threads=TEST_THREADS,
                             output_dir=str(tmp_path / "runs")))
    cfg = TrainConfig(data=str(tiny_folder), init_from=lite.run_dir, output_dir=str(tmp_path / "runs"))
    advice = advise(cfg, open_dataset(tiny_folder))
    assert [s.backbone for s in advice.ranking] == ["tf_efficientnet_lite0"]  # the source's, nothing else
    assert advice.probe_first.freeze == "probe" and advice.config.freeze == "partial"
    assert advice.config.img_size == advice.probe_first.img_size == 0  # 64 px: the source's size
    assert f"Starting from run {Path(lite.run_dir).name}" in advice.paragraph
    model = create_model(advice.config, 3)
    assert data_config(model)["input_size"] == (3, 64, 64)


@pytest.mark.slow
def test_ants_bees_continue_on_the_other_half_at_the_source_level(hymenoptera, tmp_path):
    halves = {}
    for half in (0, 1):
        root = tmp_path / f"half{half}"
        for split in ("train", "val"):
            for c in ("ants", "bees"):
                files = sorted((hymenoptera / split / c).iterdir())
                (root / split / c).mkdir(parents=True)
                for f in files[half::2] if split == "train" else files:
                    (root / split / c / f.name).hardlink_to(f) if f.stat().st_dev == tmp_path.stat().st_dev \
                        else shutil.copy(f, root / split / c / f.name)
        halves[half] = root
    base = dict(freeze="probe", epochs=3, output_dir=str(tmp_path / "runs"), early_stopping=0)
    src = train(TrainConfig(data=str(halves[0]), **base))
    cont = train(TrainConfig(data=str(halves[1]), init_from=src.run_dir, **base))
    first = RunDir(Path(cont.run_dir)).read_metrics()[0]["val_acc"]
    assert first >= src.summary.val_accuracy - 0.03, (first, src.summary.val_accuracy)


def test_the_config_field_the_flag_the_policy_and_the_portable_name(tmp_path):
    import argparse

    from core.cli.parsers import build_config, train_parser
    from core.errors import AccessError
    from core.workspace import Workspace
    parser = argparse.ArgumentParser()
    train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--data", "d", "--init-from", "/srv/runs/20261124-040400-8eb62a"])
    cfg = build_config(args)
    assert cfg.init_from == "/srv/runs/20261124-040400-8eb62a"
    assert cfg.portable().init_from == "20261124-040400-8eb62a"  # named, not located: the config leaves the server
    # weights are ignored with init_from: 'bundled' beside a backbone that has none is no error then
    assert TrainConfig(backbone="resnet18", init_from="a.zip").replace(seed=1).init_from == "a.zip"
    ws = Workspace(tmp_path / "ws", (tmp_path / "data",))
    with pytest.raises(AccessError, match="The run to start from"):
        ws.check_config(TrainConfig(data=str(tmp_path / "data"), output_dir=str(tmp_path / "ws" / "runs"),
                                    init_from="/etc"))
