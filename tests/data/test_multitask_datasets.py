"""Multi-task tasks given as class-folder datasets or zips: one sample per photo across datasets (matched by bytes),
the split rule, and errors that name the task and its dataset."""

import shutil
import zipfile
from pathlib import Path

import pytest

from core.config import TrainConfig, task_datasets
from core.data.multitask import open_multitask
from core.data.multitask_datasets import with_first_dataset, with_task_dataset
from core.data.task_samples import MISSING
from core.errors import AccessError, ConfigError, DatasetError
from core.files.digest import file_digest
from core.workspace import Workspace
from tests.conftest import make_image

COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220)}


@pytest.fixture
def two_datasets(tmp_path: Path) -> tuple[Path, Path]:
    """`hue`: red/ and blue/, 8 images each. `light`: bright/ and dark/ holding copies of 6 hue images (renamed,
    under other folders) and 4 images of its own."""
    hue, light = tmp_path / "hue", tmp_path / "light"
    for name, rgb in COLOURS.items():
        for i in range(8):
            make_image(hue / name / f"{name}{i}.png", rgb, seed=i)
    for i, src in enumerate(sorted(hue.rglob("*.png"))[::3]):  # 6 copies: blue0 blue3 blue6 red1 red4 red7
        dest = light / ("bright" if i % 2 else "dark") / f"copy{i}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    for i in range(4):
        make_image(light / ("bright" if i % 2 else "dark") / f"own{i}.png", (128, 128, 128), seed=100 + i)
    return hue, light


def make_split_dataset(root: Path) -> None:
    """train/ and val/, each with red/ and blue/ of 3 distinct images."""
    for n, (split, (c, rgb)) in enumerate((s, c) for s in ("train", "val") for c in COLOURS.items()):
        for i in range(3):
            make_image(root / split / c / f"{split}{i}.png", rgb, seed=10 * n + i)


def cfg_for(tasks: str, tmp_path: Path, **kw) -> TrainConfig:
    return TrainConfig.from_dict({"tasks": tasks, "output_dir": str(tmp_path / "runs"), **kw})


def by_digest(ds) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {file_digest(Path(s.path)): (split, s.labels) for split in ("train", "val", "test")
            for s in getattr(ds, split)}


def test_same_photo_in_two_datasets_is_one_sample_with_both_labels(two_datasets, tmp_path):
    hue, light = two_datasets
    cfg = cfg_for(f"hue={hue},{light}", tmp_path)  # a bare path is named after its folder
    assert cfg.data == str(hue)  # data is the first task's dataset
    ds = open_multitask(cfg)
    assert [t.name for t in ds.tasks] == ["hue", "light"]
    assert ds.tasks[0].classes == ["blue", "red"] and ds.tasks[1].classes == ["bright", "dark"]
    samples = ds.train + ds.val + ds.test
    assert len(samples) == 16 + 4 and ds.shared == 6  # 6 shared photos counted once
    labels = {Path(s.path).name: s.labels for s in samples}
    assert labels["blue0.png"] == (0, 1) and labels["blue3.png"] == (0, 0)  # copy0 in dark, copy1 in bright
    assert labels["red2.png"] == (1, MISSING)  # only hue holds it
    assert labels["own0.png"] == (MISSING, 1) and labels["own1.png"] == (MISSING, 0)
    assert not any(Path(s.path).name.startswith("copy") for s in samples)  # the first dataset's copy names it
    assert len(by_digest(ds)) == len(samples)  # every photo once: in one split for every task
    counts = ds.task_counts()
    assert sum(counts["light"]["train"].values()) + sum(counts["light"]["val"].values()) == 10
    assert all(sum(c["val"].values()) for c in counts.values())  # each task can be scored
    summary = ds.summary()
    assert summary["task_sources"] == {"hue": "hue", "light": "light"} and summary["shared_images"] == 6


def test_a_zip_task_reads_like_its_folder(two_datasets, tmp_path):
    hue, light = two_datasets
    archive = tmp_path / "light.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(light.rglob("*.png")):
            zf.write(p, f"light/{p.relative_to(light)}")
    from_zip = open_multitask(cfg_for(f"hue={hue},{archive}", tmp_path))
    from_folder = open_multitask(cfg_for(f"hue={hue},light={light}", tmp_path))
    assert [t.name for t in from_zip.tasks] == ["hue", "light"]
    assert {d: lab for d, (_, lab) in by_digest(from_zip).items()} == \
        {d: lab for d, (_, lab) in by_digest(from_folder).items()}
    assert from_zip.shared == 6


def test_split_folders_are_honoured_and_disagreements_follow_the_first_task(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_split_dataset(a)
    shared = sorted(a.rglob("*.png"))
    for i, src in enumerate(shared):  # b labels every image of a; it puts val/red/ images into train/
        split = "train" if "red" in src.parts else src.parts[-3]
        dest = b / split / ("x" if i % 2 else "y") / f"{i}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    ds = open_multitask(cfg_for(f"a={a},b={b}", tmp_path))
    assert ds.layout == "splits" and len(ds.train) == len(ds.val) == 6
    assert all(Path(s.path).parts[-3] == "val" for s in ds.val)  # a's split wins
    assert any("3 image(s) are in datasets whose split folders disagree" in w for w in ds.warnings)

    # b without split folders: its own images are split here; the ones a holds keep a's split
    c = tmp_path / "c"
    for i, src in enumerate(shared[:4]):
        (c / "x").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, c / "x" / f"{i}.png")
    for i in range(6):
        make_image(c / ("x" if i % 2 else "y") / f"own{i}.png", (90, 90, 90), seed=300 + i)
    ds = open_multitask(cfg_for(f"c={c},a={a}", tmp_path))  # c first: it brings no split folders
    splits = by_digest(ds)
    for src in shared:
        assert splits[file_digest(src)][0] == src.parts[-3]
    assert {lab for _, lab in splits.values() if lab[1] == MISSING} and ds.task_counts()["c"]["val"]


def test_very_different_sizes_keep_every_task_in_train_and_val(tmp_path):
    big, small = tmp_path / "big", tmp_path / "small"
    for i in range(200):
        make_image(big / ("p" if i % 2 else "q") / f"{i}.png", (200, 40, 40) if i % 2 else (40, 40, 200), size=8,
                   seed=i)
    for i in range(20):
        make_image(small / ("s" if i % 2 else "t") / f"{i}.png", (90, 200, 90), size=8, seed=1000 + i)
    ds = open_multitask(cfg_for(f"big={big},small={small}", tmp_path))
    counts = ds.task_counts()
    assert sum(counts["small"]["val"].values()) == 4 and sum(counts["small"]["train"].values()) == 16
    assert sum(counts["big"]["val"].values()) == 40


def test_a_task_without_validation_images_is_an_error_naming_it(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_split_dataset(a)
    for i, src in enumerate(sorted((a / "train").rglob("*.png"))):  # b relabels only a's training images
        (b / ("x" if i % 2 else "y")).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, b / ("x" if i % 2 else "y") / f"{i}.png")
    with pytest.raises(DatasetError, match=rf"Task 'b' \({b}\) has no validation images .*val/ folder"):
        open_multitask(cfg_for(f"a={a},b={b}", tmp_path))


def test_task_weights_name_the_datasets_tasks(two_datasets, tmp_path):
    hue, light = two_datasets
    cfg = cfg_for(f"hue={hue},light={light}", tmp_path, task_weights="light=3")
    assert cfg.task_spec.weights_for(["hue", "light"]) == [0.5, 1.5]
    with pytest.raises(ConfigError, match=r"names size, not one of the tasks \(its tasks: hue, light\)"):
        open_multitask(cfg_for(f"hue={hue},light={light}", tmp_path, task_weights="size=2"))


def test_a_file_repeated_inside_one_dataset_is_used_once(two_datasets, tmp_path):
    hue, light = two_datasets
    shutil.copyfile(hue / "red" / "red0.png", hue / "blue" / "again.png")
    ds = open_multitask(cfg_for(f"hue={hue},light={light}", tmp_path))
    assert len(ds.train + ds.val) == 20
    assert any(Path(k.path).name in ("again.png", "red0.png") and "same bytes" in k.reason for k in ds.skipped)
    assert any("repeat another image of the same dataset" in w for w in ds.warnings)


@pytest.mark.parametrize("tasks,message", [
    ("a={hue},b={tmp}/nope", r"Task 'b' \(.*nope\): Dataset path .*nope does not exist"),
    ("a={hue},b={tmp}/one", r"Task 'b' \(.*one\): Only one class \(x\)"),
    ("a={hue},b={tmp}/loose.zip", r"Task 'b' \(.*loose.zip\): No class folders found"),
])
def test_bad_datasets_name_the_task_and_path(two_datasets, tmp_path, tasks, message):
    hue, _ = two_datasets
    for i in range(3):
        make_image(tmp_path / "one" / "x" / f"{i}.png", (10, 10, 10), seed=i)
    with zipfile.ZipFile(tmp_path / "loose.zip", "w") as zf:  # images, no class folders
        for i, p in enumerate(sorted(hue.rglob("*.png"))[:3]):
            zf.write(p, f"{i}.png")
    with pytest.raises(DatasetError, match=message):
        open_multitask(cfg_for(tasks.format(hue=hue, tmp=tmp_path), tmp_path))


@pytest.mark.parametrize("tasks,message", [
    ("a=/d/x,a=/d/y", r"task 'a' is given twice \(/d/x, /d/y\)"),
    ("/d/x,/e/x", "task 'x' is given twice"),
    ("a=/d/x,/d/labels.csv", r"mixes a labels file \(/d/labels.csv\) with datasets"),
    ("species=/d/labels.csv", "is a labels file: its header names the tasks"),
    ("my task=/d/x,b=/d/y", "task name 'my task' .* is not allowed"),
    ("a=/d/x", r"only one dataset \(/d/x\)"),
])
def test_bad_task_lists_are_config_errors(tmp_path, tasks, message):
    with pytest.raises(ConfigError, match=message):
        cfg_for(tasks, tmp_path)


def test_parsing_naming_and_the_portable_config(tmp_path):
    assert task_datasets("species=/d/ants, /d/light.zip,/d/more/") == [
        ("species", "/d/ants"), ("light", "/d/light.zip"), ("more", "/d/more/")]
    assert task_datasets("/d/labels.csv") == [] and task_datasets("") == []
    cfg = cfg_for("species=/d/ants,light=/d/light.zip", tmp_path)
    assert cfg.data == "/d/ants"
    assert cfg.portable().tasks == "species=ants,light=light.zip" and cfg.portable().data == "ants"
    with pytest.raises(ConfigError, match="data is the first task's dataset"):
        TrainConfig(data="/d/other", tasks="species=/d/ants,light=/d/light.zip").validate()
    # the Data page's steps: the chosen dataset becomes the first task; a new main dataset replaces it
    step = with_task_dataset(TrainConfig(data="/d/ants"), "/d/light.zip", first_name="species")
    assert step.tasks == "species=/d/ants,light=/d/light.zip"
    assert with_task_dataset(step, "/d/size", "big").tasks.endswith(",big=/d/size")
    assert with_first_dataset(step, "/d/ants2").tasks == "species=/d/ants2,light=/d/light.zip"
    with pytest.raises(ConfigError, match="light' is given twice"):
        with_task_dataset(step, "/d/light")


def test_workspace_checks_every_task_dataset(two_datasets, tmp_path):
    hue, light = two_datasets
    ws = Workspace(root=tmp_path / "ws", data_roots=(hue.resolve(),))
    cfg = cfg_for(f"hue={hue},light={light}", tmp_path, output_dir=str(tmp_path / "ws" / "runs"))
    with pytest.raises(AccessError, match="The dataset of task 'light'"):
        ws.check_config(cfg)
