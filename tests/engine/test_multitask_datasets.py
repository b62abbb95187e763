"""Multi-task training from two class-folder datasets, end to end from the CLI: `--tasks hue=DIR,light=DIR2` with no
--data; the photos both datasets hold train once with both labels, every task trains every epoch (the second task
is a quarter the size of the first), and the run reports each task and exports a timm bundle per task."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.analysis.predictions import load_predictions
from core.cli import main
from core.config import TrainConfig
from core.data.task_view import open_run_dataset
from core.files.paths import relative_path
from core.runs import RunDir, list_runs


@pytest.fixture
def hue_and_light(tmp_path: Path) -> tuple[Path, Path]:
    """hue: red/ and blue/ photos, bright and dark, 12 each. light: bright/ and dark/ copies of 8 of them plus 2
    photos of its own per class (hard links and copies both count as the same photo)."""
    rng = np.random.default_rng(0)
    hue, light = tmp_path / "hue", tmp_path / "light"
    for name, rgb in (("red", (220, 40, 40)), ("blue", (40, 60, 220))):
        for i in range(12):
            scale = 1.0 if i % 2 else 0.35
            arr = np.clip(np.array(rgb) * scale + rng.normal(0, 20, (48, 48, 3)), 0, 255).astype(np.uint8)
            path = hue / name / f"{name}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
            if i < 4:
                dest = light / ("bright" if i % 2 else "dark") / f"{name}{i}.png"
                dest.parent.mkdir(parents=True, exist_ok=True)
                if i < 2:
                    shutil.copyfile(path, dest)
                else:
                    dest.hardlink_to(path)
    for i in range(4):
        arr = np.full((48, 48, 3), (230 if i % 2 else 50) + i, np.uint8)
        Image.fromarray(arr).save(light / ("bright" if i % 2 else "dark") / f"grey{i}.png")
    return hue, light


def tiny(out: Path, *extra: str) -> list[str]:
    return ["train", "--backbone", "test_efficientnet", "--weights", "random", "--img-size", "64", "--batch-size",
            "4", "--lr", "3e-3", "--augmentation", "none", "--early-stopping", "0", "--out", str(out), "--threads",
            "2", "--quiet", *extra]


def test_two_folder_tasks_train_and_export_per_task(hue_and_light, tmp_path, capsys):
    hue, light = hue_and_light
    out = tmp_path / "runs"
    assert main(tiny(out, "--tasks", f"hue={hue},{light}", "--freeze", "probe", "--epochs", "3")) == 0
    printed = capsys.readouterr().out
    assert "task hue: val_accuracy" in printed and "task light: val_accuracy" in printed
    run = list_runs(out)[0]
    summary = run.read_summary()
    assert summary.status == "completed" and list(summary.tasks) == ["hue", "light"]
    assert summary.dataset == "hue"  # data is the first task's dataset
    assert summary.tasks["light"]["classes"] == ["bright", "dark"]
    dataset = json.loads(run.dataset_file.read_text())
    assert dataset["shared_images"] == 8 and dataset["task_sources"] == {"hue": "hue", "light": "light"}
    n = {task: sum(sum(c.values()) for c in splits.values()) for task, splits in dataset["task_counts"].items()}
    assert n == {"hue": 24, "light": 12}
    assert sum(sum(c.values()) for c in dataset["counts"].values()) == 24 + 4  # the 8 shared photos once
    history = run.read_metrics()
    assert len(history) == 3
    for m in history:  # every task trained in every epoch
        assert set(m["tasks"]) == {"hue", "light"}
        assert all(not math.isnan(t["train_acc"]) and not math.isnan(t["val_acc"]) for t in m["tasks"].values())
    for task, classes in (("hue", ["blue", "red"]), ("light", ["bright", "dark"])):
        bundle = run.path / "tasks" / task / "bundle"
        assert (bundle / "model.safetensors").exists()
        assert json.loads((bundle / "config.json").read_text())["label_names"] == classes
    # each task view names its images in that task's own dataset, so Inspect finds every one of them, the light
    # photos that only the light dataset holds included
    view = RunDir(run.path / "tasks" / "light")
    cfg = TrainConfig.load(view.config)
    assert Path(cfg.data) == light
    listed = open_run_dataset(view.path, cfg)
    preds = load_predictions(view.predictions)
    assert [relative_path(s.path, light) for s in listed.val] == preds.splits["val"].paths
    assert all((light / p).is_file() for p in preds.splits["val"].paths)
    assert {Path(s.path).parent.name for s in listed.train + listed.val} == {"bright", "dark"}
    assert any(Path(s.path).name.startswith("grey") for s in listed.train + listed.val)


def test_data_that_is_not_the_first_task_is_refused(hue_and_light, tmp_path, capsys):
    hue, light = hue_and_light
    code = main(tiny(tmp_path / "runs", "--data", str(light), "--tasks", f"hue={hue},light={light}"))
    assert code == 2
    assert "is not the first dataset of --tasks" in capsys.readouterr().err
    code = main(tiny(tmp_path / "runs", "--tasks", f"hue={hue},hue={light}"))
    assert code == 2 and "task 'hue' is given twice" in capsys.readouterr().err


def test_help_names_both_forms_of_tasks(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a labels file (.csv or .json)" in text and "'species=/d/antsbees,light=/d/light.zip'" in text
