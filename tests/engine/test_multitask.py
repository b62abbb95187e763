"""Multi-task training end to end on tiny generated images: task 'hue' (red / blue) and task 'light' (bright /
dark) over one folder, some labels missing. Per-task metrics, one timm bundle per task that reproduces its task's
validation accuracy with plain timm, and one multi-output TorchScript file that predicts the same."""

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from core.cli import main
from core.config import TrainConfig
from core.data.images import load_image
from core.export.multitask import load_multitask_torchscript
from core.jobs import JobRegistry
from core.runs import list_runs
from tests.conftest import TEST_THREADS


@pytest.fixture
def two_tasks(tmp_path: Path) -> tuple[Path, Path]:
    return write_two_tasks(tmp_path)


def write_two_tasks(tmp_path: Path) -> tuple[Path, Path]:
    """shots/imgs/*.png, 10 per (hue, light) pair, and labels.csv over them with some labels missing."""
    rng = np.random.default_rng(0)
    root, lines = tmp_path / "shots", ["path,hue,light"]
    for hue, rgb in (("red", (220, 40, 40)), ("blue", (40, 60, 220))):
        for light, scale in (("bright", 1.0), ("dark", 0.35)):
            for i in range(10):
                arr = np.clip(np.array(rgb) * scale + rng.normal(0, 20, (48, 48, 3)), 0, 255).astype(np.uint8)
                path = root / "imgs" / f"{hue}_{light}_{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(path)
                # image 0 of each group has no hue label, image 1 no light label
                lines.append(f"imgs/{path.name},{'' if i == 0 else hue},{'' if i == 1 else light}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    return root, labels


def tiny_args(root: Path, labels: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(root), "--tasks", str(labels), "--backbone", "test_efficientnet", "--weights",
            "random", "--img-size", "64", "--batch-size", "4", "--lr", "3e-3", "--backbone-lr-mult", "1.0",
            "--augmentation", "none", "--early-stopping", "0", "--out", str(out), "--threads", str(TEST_THREADS),
            "--quiet", *extra]


def test_two_task_run_reports_per_task_and_every_export_reproduces_it(two_tasks, tmp_path, capsys):
    root, labels = two_tasks
    out = tmp_path / "runs"
    assert main(tiny_args(root, labels, out, "--freeze", "full", "--epochs", "6")) == 0
    printed = capsys.readouterr().out
    assert "task hue: val_accuracy" in printed and "task light: val_accuracy" in printed
    run = list_runs(out)[0]
    summary = run.read_summary()
    assert summary.status == "completed" and list(summary.tasks) == ["hue", "light"]
    for task, classes in (("hue", ["blue", "red"]), ("light", ["bright", "dark"])):
        t = summary.tasks[task]
        assert t["classes"] == classes and t["weight"] == 1.0
        assert t["val"]["accuracy"] >= 0.75, (task, t["val"])  # chance is 0.5
        assert {"macro_precision", "macro_recall", "macro_f1", "confusion_matrix"} <= set(t["val"])
    history = run.read_metrics()
    assert len(history) == 6 and all(set(m["tasks"]) == {"hue", "light"} for m in history)
    assert all(0 <= m["tasks"]["light"]["val_acc"] <= 1 for m in history)

    # each task's bundle alone, with plain timm, reproduces that task's validation accuracy
    results = json.loads((run.path / "multitask.json").read_text())
    predicted = {}
    for task in ("hue", "light"):
        model = timm.create_model(f"local-dir:{run.path / 'tasks' / task / 'bundle'}", pretrained=True).eval()
        assert model.pretrained_cfg["label_names"] == summary.tasks[task]["classes"]
        transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
        val = results["splits"][task]["val"]
        x = torch.stack([transform(load_image(root / p)) for p in val["paths"]])
        with torch.inference_mode():
            predicted[task] = model(x).argmax(1).tolist()
        assert predicted[task] == val["predicted"]
        accuracy = float(np.mean(np.array(predicted[task]) == np.array(val["labels"])))
        assert accuracy == pytest.approx(summary.tasks[task]["val"]["accuracy"])

    # the multi-output file answers both tasks in one pass, as the bundles do
    module, tasks, prep = load_multitask_torchscript(run.path / "multitask.torchscript.pt")
    assert tasks == {"hue": ["blue", "red"], "light": ["bright", "dark"]}
    transform = timm.data.create_transform(**{**prep, "input_size": tuple(prep["input_size"])})
    for t, task in enumerate(tasks):
        paths = results["splits"][task]["val"]["paths"]
        with torch.inference_mode():
            probs = module(torch.stack([transform(load_image(root / p)) for p in paths]))
        assert len(probs) == 2 and probs[t].argmax(1).tolist() == predicted[task]
        assert torch.allclose(probs[t].sum(1), torch.ones(len(paths)), atol=1e-5)

    assert main(["runs", "--out", str(out)]) == 0
    assert "hue_acc" in capsys.readouterr().out


def test_multitask_job_reports_each_task_per_epoch(two_tasks, tmp_path):
    root, labels = two_tasks
    cfg = TrainConfig(data=str(root), tasks=str(labels), task_weights="hue=3", backbone="test_efficientnet",
                      weights="random", img_size=64, freeze="probe", epochs=2, batch_size=4,
                      output_dir=str(tmp_path / "runs"), threads=TEST_THREADS)
    job = JobRegistry().submit(cfg)
    assert job.finished.wait(180)
    snap = job.snapshot()
    assert snap.status == "completed", snap.error
    assert [set(e.tasks) for e in snap.epochs] == [{"hue", "light"}] * 2
    assert snap.summary.tasks["hue"]["weight"] == 1.5 and snap.summary.tasks["light"]["weight"] == 0.5
    assert any("hue 1.5, light 0.5" in n for n in snap.summary.notes)
    assert any("own best epoch" in n for n in snap.summary.notes)  # probe: independent heads, each its best
    for task in ("hue", "light"):
        assert (Path(snap.run_dir) / "tasks" / task / "bundle" / "model.safetensors").exists()


def test_single_task_metrics_lines_are_unchanged(trained_run):
    line = json.loads(trained_run.metrics.read_text().splitlines()[0])
    assert "tasks" not in line and trained_run.read_summary().tasks is None


@pytest.mark.slow
def test_stopped_multitask_run_resumes(two_tasks, tmp_path, capsys):
    """A multi-task run stopped after its first epoch goes on with `train --resume` (in this process: the kill, the
    'interrupted' status and the resume in a fresh process are tested once, on a single-task run, in
    tests/scenarios/test_faults.py) and ends with every epoch's per-task metrics and both tasks' bundles."""
    import threading

    from core.engine.callbacks import Callback
    from core.engine.train import train
    root, labels = two_tasks
    cfg = TrainConfig(data=str(root), tasks=str(labels), backbone="test_efficientnet", weights="random", img_size=64,
                      batch_size=4, lr=3e-3, backbone_lr_mult=1.0, augmentation="none", early_stopping=0,
                      threads=TEST_THREADS, freeze="full", epochs=3, output_dir=str(tmp_path / "runs"))
    stop = threading.Event()

    class StopAfterEpoch1(Callback):
        def on_epoch_end(self, m):
            stop.set()
    first = train(cfg, [StopAfterEpoch1()], stop=stop)
    run = list_runs(tmp_path / "runs")[0]
    assert first.status == "stopped" and len(run.read_metrics()) == 1
    assert main(["train", "--resume", str(run.path), "--quiet"]) == 0, capsys.readouterr().err
    history = run.read_metrics()
    assert [m["epoch"] for m in history] == [1, 2, 3] and all("tasks" in m for m in history)
    summary = run.read_summary()
    assert summary.status == "completed" and set(summary.tasks) == {"hue", "light"}
    assert (run.path / "tasks" / "light" / "bundle" / "model.safetensors").exists()


def test_probe_heads_train_like_a_single_task_probe(tmp_path):
    """A multi-task probe's head learns exactly as the single-task probe does on the same images and split (both
    on standardised features, folded back into a plain head): one task in a labels file and the same images as
    class folders give the same validation probabilities."""
    from core.analysis.predictions import load_predictions
    from core.engine.train import train
    rng = np.random.default_rng(1)
    root, lines = tmp_path / "shots", ["path,hue"]
    for split, n in (("train", 8), ("val", 4)):
        for hue, rgb in (("blue", (40, 60, 220)), ("red", (220, 40, 40))):
            for i in range(n):
                arr = np.clip(np.array(rgb) + rng.normal(0, 40, (48, 48, 3)), 0, 255).astype(np.uint8)
                path = root / split / hue / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(path)
                lines.append(f"{split}/{hue}/{i}.png,{hue}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    cfg = TrainConfig(data=str(root), backbone="test_efficientnet", weights="random", img_size=64, freeze="probe",
                      epochs=4, batch_size=4, lr=3e-3, augmentation="none", early_stopping=0, threads=TEST_THREADS,
                      output_dir=str(tmp_path / "runs"))
    single = train(cfg)
    multi = train(cfg.replace(tasks=str(labels)))
    expected = load_predictions(Path(single.run_dir) / "predictions.npz").splits["val"]
    got = json.loads((Path(multi.run_dir) / "multitask.json").read_text())["splits"]["hue"]["val"]
    assert got["paths"] == expected.paths
    assert got["predicted"] == expected.predicted.tolist()
    # each run's bundle with plain timm: the multi-task head is the single-task head
    transform, probs = None, {}
    for run, folder in ((single, "bundle"), (multi, "tasks/hue/bundle")):
        model = timm.create_model(f"local-dir:{Path(run.run_dir) / folder}", pretrained=True).eval()
        transform = transform or timm.data.create_transform(**timm.data.resolve_model_data_config(model))
        with torch.inference_mode():
            x = torch.stack([transform(load_image(root / p)) for p in got["paths"]])
            probs[folder] = model(x).softmax(1).numpy()
    np.testing.assert_allclose(probs["tasks/hue/bundle"], probs["bundle"], atol=1e-5)
