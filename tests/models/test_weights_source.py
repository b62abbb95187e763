"""Where a model's starting weights come from (core/models/weights_source.py): the sources a backbone offers, the
source a config is on, and the config changes a new choice makes; a weights file that does not fit is a sentence."""

from pathlib import Path

import pytest
from safetensors.torch import save_file

from core.config import TrainConfig
from core.errors import ConfigError, WeightsError
from core.models import weights_source as ws
from core.models.backbones import create_model


def test_bundled_weights_are_offered_only_for_the_bundled_backbones():
    assert ws.sources_for("tf_efficientnet_lite0") == ["bundled", "hub", "file", ws.FROM_RUN]
    assert ws.sources_for("resnet18") == ["hub", "file", ws.FROM_RUN]


@pytest.mark.parametrize(("changes", "source"), [
    ({"weights": "bundled"}, "bundled"),
    ({"weights": "hub"}, "hub"),
    ({"weights": "/w/mine.safetensors"}, "file"),
    ({"weights": "random"}, "file"),  # random has no button of its own: the file source asks for one
    ({"weights": "hub", "init_from": "/runs/r1"}, ws.FROM_RUN),
])
def test_the_source_a_config_is_on(changes, source):
    assert ws.current_source(TrainConfig(backbone="tf_efficientnet_lite0").replace(**changes)) == source


def test_the_weights_a_source_means():
    on_file = TrainConfig(weights="/w/mine.PTH")
    assert ws.weights_for(on_file, "file") == "/w/mine.PTH"  # the file the config names
    assert ws.weights_for(TrainConfig(weights="bundled"), "file") is None  # none yet: one must be uploaded
    assert ws.weights_for(on_file, "hub") == "hub"
    assert ws.weights_for(on_file, ws.FROM_RUN) == "/w/mine.PTH"  # a finished run keeps the config's own


def test_pretrained_weights_leave_a_finished_run():
    from_run = TrainConfig(backbone="resnet18", weights="hub").replace(init_from="/runs/r1")
    assert ws.pretrained_changes(from_run, "resnet50", "hub") == {"backbone": "resnet50", "init_from": "",
                                                                  "weights": "hub"}
    assert ws.pretrained_changes(from_run, "resnet50", None) == {"backbone": "resnet50", "init_from": ""}
    assert ws.pretrained_changes(TrainConfig(weights="hub"), "resnet50", None) == {}  # a file to come: no change


def test_a_weights_file_is_checked_against_the_backbone(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file(create_model(TrainConfig(backbone="test_efficientnet", weights="random"), 2).state_dict(), good)
    ws.check_weights_file("test_efficientnet", good)
    bad = tmp_path / "bad.safetensors"
    save_file({"nothing.weight": create_model(TrainConfig(backbone="test_efficientnet", weights="random"), 2)
               .state_dict()["conv_stem.weight"][:1]}, bad)
    with pytest.raises(WeightsError):
        ws.check_weights_file("test_efficientnet", bad)


def test_a_finished_run_brings_its_backbone(tiny_config, tmp_path):
    from core.engine.train import train
    run = Path(train(tiny_config.replace(freeze="probe", epochs=1)).run_dir)
    changes, src = ws.run_changes(str(run))
    assert changes == {"init_from": str(run), "backbone": "test_efficientnet"}
    assert f"from run {run.name}" in ws.describe_run_source(src)
    with pytest.raises(ConfigError, match="neither a run folder nor a model bundle"):
        ws.run_changes(tmp_path)
