import pytest

from core.config import TrainConfig, field_meta
from core.errors import ConfigError


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig(data="d", freeze="partial", trainable_stages=3, lr=3e-4, augmentation="light")
    cfg.save(tmp_path / "c.yaml")
    assert TrainConfig.load(tmp_path / "c.yaml") == cfg


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="Unknown config key.*learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_out_of_range_names_field_and_range():
    with pytest.raises(ConfigError, match=r"lr: 5.0 is out of range; allowed 1e-06 to 1.0"):
        TrainConfig.from_dict({"lr": 5.0})


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError, match="freeze: 'frozen' is not allowed; choose one of auto, probe, partial, full"):
        TrainConfig.from_dict({"freeze": "frozen"})


def test_wrong_type_is_refused():
    with pytest.raises(ConfigError, match="epochs: expected int"):
        TrainConfig.from_dict({"epochs": "ten"})


def test_overrides_are_typed():
    cfg = TrainConfig().with_overrides(["lr=3e-4", "epochs=4", "freeze=probe"])
    assert (cfg.lr, cfg.epochs, cfg.freeze) == (3e-4, 4, "probe")
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig().with_overrides(["batch_size=0"])


def test_yaml_python_tag_is_refused():
    with pytest.raises(ConfigError, match="not valid YAML"):
        TrainConfig.from_yaml("lr: !!python/object/apply:os.system ['echo hacked']")


def test_bundled_weights_only_for_lite0():
    with pytest.raises(ConfigError, match="bundled' weights exist only for tf_efficientnet_lite0"):
        TrainConfig(backbone="resnet50").validate()


def test_every_field_has_help_and_section():
    import dataclasses
    for f in dataclasses.fields(TrainConfig):
        meta = field_meta(f.name)
        assert meta["help"] and meta["section"] in ("data", "model", "optim", "hardware", "output", "adapt",
                                                     "distill"), f.name


def test_old_lite0_config_with_bundled_weights_says_what_to_change():
    with pytest.raises(ConfigError, match="TensorFlow ports.*tf_efficientnet_lite0"):
        TrainConfig(backbone="efficientnet_lite0").validate()


def test_teachers_are_a_list_in_yaml_and_a_repeatable_flag(tmp_path):
    from core.cli.parsers import build_config
    cfg = TrainConfig(teachers=("runs/a", "/x/b.zip"))
    assert "teachers:\n- runs/a\n- /x/b.zip\n" in cfg.to_yaml()
    assert TrainConfig.from_yaml(cfg.to_yaml()) == cfg
    assert TrainConfig.from_dict({"teachers": "runs/a"}).teachers == ("runs/a",)
    assert cfg.portable().teachers == ("a", "b.zip")  # named, never located, when the config leaves the server
    with pytest.raises(ConfigError, match="teachers: expected a list of paths"):
        TrainConfig.from_dict({"teachers": [1, 2]})
    import argparse

    from core.cli.parsers import distill_parser
    sub = argparse.ArgumentParser().add_subparsers(dest="command")
    distill_parser(sub)
    args = sub.choices["distill"].parse_args(["--teacher", "r1", "--teacher", "r2", "--student",
                                              "tf_efficientnet_lite1", "--data", "d"])
    got = build_config(args)
    assert got.teachers == ("r1", "r2") and got.backbone == "tf_efficientnet_lite1" and args.baseline


def test_tasks_are_parsed_once_into_a_typed_spec(tmp_path):
    from core.task_spec import TaskSpec
    a, b = tmp_path / "ants", tmp_path / "light.zip"
    cfg = TrainConfig.from_dict({"tasks": f"species={a},{b}", "task_weights": "light=3"})
    spec = cfg.task_spec
    assert spec is cfg.task_spec  # parsed once per config
    assert spec.several and spec.labels_file == "" and spec.datasets == (("species", str(a)), ("light", str(b)))
    assert spec.weights_for(["species", "light"]) == [0.5, 1.5] and cfg.data == str(a)
    assert spec.text() == f"species={a},light={b}" and cfg.portable().tasks == "species=ants,light=light.zip"
    labels = TrainConfig(data=str(tmp_path), tasks=str(tmp_path / "labels.csv")).task_spec
    assert labels == TaskSpec(labels_file=str(tmp_path / "labels.csv")) and labels.several
    assert not TrainConfig().task_spec.several and TrainConfig().task_spec.text() == ""
    with pytest.raises(ConfigError, match="tasks: only one dataset"):
        _ = TrainConfig(tasks=str(a)).task_spec
    with pytest.raises(ConfigError, match="task_weights: 'x' is not of the form"):
        TrainConfig.from_dict({"task_weights": "x"})
