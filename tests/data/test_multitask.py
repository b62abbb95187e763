"""Multi-task labels files: parsing, missing labels, the split, and messages that name the line and the path."""

import json
from pathlib import Path

import pytest

from core.config import TrainConfig
from core.data.multitask import open_multitask
from core.data.task_samples import MISSING
from core.errors import ConfigError, DatasetError
from tests.conftest import make_image


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    for i in range(12):
        make_image(root / "pics" / f"{i}.png", (200, 40, 40) if i % 2 else (40, 40, 200), seed=i)
    return root


def cfg_for(root: Path, labels: Path, **kw) -> TrainConfig:
    return TrainConfig(data=str(root), tasks=str(labels), output_dir=str(root.parent / "runs"), **kw)


def write(root: Path, text: str, name: str = "labels.csv") -> Path:
    path = root.parent / name
    path.write_text(text)
    return path


def good_csv(root: Path) -> Path:
    size = ["" if i < 3 else "big" if i % 3 else "small" for i in range(12)]  # the first three have none
    lines = ["path,hue,size"] + [f"pics/{i}.png,{'red' if i % 2 else 'blue'},{size[i]}" for i in range(12)]
    return write(root, "\n".join(lines) + "\n")


def test_csv_with_missing_labels(images):
    ds = open_multitask(cfg_for(images, good_csv(images)))
    assert [t.name for t in ds.tasks] == ["hue", "size"]
    assert ds.tasks[0].classes == ["blue", "red"] and ds.tasks[1].classes == ["big", "small"]
    samples = ds.train + ds.val
    assert len(samples) == 12
    by_name = {Path(s.path).name: s.labels for s in samples}
    assert by_name["0.png"] == (0, MISSING) and by_name["5.png"] == (1, 0) and by_name["6.png"] == (0, 1)
    assert sorted(s.labels[0] for s in ds.val) == [0, 1]  # stratified on the first task: one of each of 6
    counts = ds.task_counts()
    assert sum(counts["size"]["train"].values()) + sum(counts["size"]["val"].values()) == 9  # 3 unlabeled
    assert sum(ds.counts()["train"].values()) == len(ds.train)  # counts still add up to images


def test_json_reads_like_the_csv(images):
    rows = [{"path": f"pics/{i}.png", "hue": "red" if i % 2 else "blue",
             **({"size": "big" if i % 3 else "small"} if i >= 3 else {})} for i in range(12)]
    from_json = open_multitask(cfg_for(images, write(images, json.dumps(rows), "labels.json")))
    from_csv = open_multitask(cfg_for(images, good_csv(images)))
    assert [(s.path, s.labels) for s in from_json.train] == [(s.path, s.labels) for s in from_csv.train]


def test_train_and_val_folders_are_the_split(tmp_path):
    root = tmp_path / "data"
    lines = ["path,hue"]
    for split in ("train", "val"):
        for i in range(4):
            make_image(root / split / f"{i}.png", (200, 0, 0), seed=i)
            lines.append(f"{split}/{i}.png,{'a' if i % 2 else 'b'}")
    ds = open_multitask(cfg_for(root, write(root, "\n".join(lines))))
    assert ds.layout == "splits" and len(ds.train) == len(ds.val) == 4
    assert all("/val/" in s.path for s in ds.val)


@pytest.mark.parametrize("text,message", [
    ("path\npics/0.png\n", "names no task"),
    ("path,hue\npics/0.png,red\npics/1.png,red,extra\n", r"line 3: 3 cell\(s\), but the header has 2"),
    ("path,hue\npics/0.png,red\npics/nope.png,blue\n", r"line 3 \(pics/nope.png\)"),
    ("path,hue\npics/0.png,red\n../labels.csv,blue\n", r"point outside the image folder: line 3"),
    ("path,hue\n/etc/passwd,red\npics/1.png,blue\n", "point outside the image folder: line 2"),
    ("path,hue\npics/0.png,red\npics/1.png,red\n", "task 'hue' has only the class 'red'"),
    ("path,hue,size\npics/0.png,red,\npics/1.png,blue,\n", "task 'size' has no labels at all"),
    ("path,hue\npics/0.png,red\npics/0.png,blue\n", r"pics/0.png is listed twice \(line 2 and line 3\)"),
    ("path,hue,hue\npics/0.png,red,red\n", "task 'hue' appears twice"),
    ("path,my task\npics/0.png,red\n", "task name 'my task'"),
    ("path,hue\n", "no image lines"),
])
def test_bad_labels_files_name_the_line_and_path(images, text, message):
    with pytest.raises(DatasetError, match=message):
        open_multitask(cfg_for(images, write(images, text)))


def test_bad_json_and_missing_file(images):
    with pytest.raises(DatasetError, match="not valid JSON"):
        open_multitask(cfg_for(images, write(images, "[{", "labels.json")))
    with pytest.raises(DatasetError, match=r"entry 2: no \"path\" string"):
        open_multitask(cfg_for(images, write(images, '[{"path": "pics/0.png", "a": "x"}, {"a": "y"}]', "l.json")))
    with pytest.raises(DatasetError, match="does not exist"):
        open_multitask(cfg_for(images, images.parent / "missing.csv"))


def test_task_weights(images):
    labels = good_csv(images)
    assert cfg_for(images, labels).task_spec.weights_for(["hue", "size"]) == [1.0, 1.0]
    assert cfg_for(images, labels, task_weights="hue=3").task_spec.weights_for(["hue", "size"]) == [1.5, 0.5]
    with pytest.raises(ConfigError, match="names colour, not a task of the labels file"):
        open_multitask(cfg_for(images, labels, task_weights="colour=2"))
    with pytest.raises(ConfigError, match="task_weights: 'hue=x' is not of the form"):
        cfg_for(images, labels, task_weights="hue=x").validate()
    with pytest.raises(ConfigError, match="every task weight 0"):
        cfg_for(images, labels, task_weights="hue=0,size=0").task_spec.weights_for(["hue", "size"])


def test_portable_config_names_the_labels_file_only(images):
    assert cfg_for(images, good_csv(images)).portable().tasks == "labels.csv"
