"""A multi-task run's tasks served like single-task runs: each task view (<run>/tasks/<task>/) has the files every
reader of a run needs (predictions, summary with calibration, record, a timm bundle), Inspect and the export check
work on it, the multi-output ONNX file reproduces the torch model and names its outputs after the tasks, and the CLI
addresses a task. One tiny two-task run (hue, light; some labels missing) is trained once for the module."""

import json
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import timm
import torch

from core.analysis.inspect import calibration_report, inspect_run, loss_table, open_view, score_training
from core.analysis.predictions import load_predictions
from core.cli import main
from core.config import TrainConfig
from core.data.images import load_image
from core.export.multitask import load_multitask_torchscript, load_task_models
from core.export.multitask_onnx import MultiOnnxRunner, export_multitask_run, task_images
from core.models.init_from import read_source
from core.models.multitask import Probabilities
from core.runs import RunDir, list_runs
from tests.conftest import TEST_THREADS
from tests.engine.test_multitask import tiny_args, write_two_tasks


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[RunDir, Path]:
    tmp = tmp_path_factory.mktemp("mt")
    root, labels = write_two_tasks(tmp)
    out = tmp / "runs"
    # 5 epochs: every validation image is then far from a tie, so the exports' top-1 must agree on all of them
    assert main(tiny_args(root, labels, out, "--freeze", "partial", "--epochs", "5")) == 0
    return list_runs(out)[0], root


def test_each_task_view_is_a_complete_run_of_that_task(trained):
    run, root = trained
    summary = run.read_summary()
    results = json.loads((run.path / "multitask.json").read_text())
    assert [r.run_id for r in list_runs(run.path.parent, task_views=True)] == \
        [run.run_id, f"{run.run_id}-hue", f"{run.run_id}-light"]
    assert not list(run.path.glob("bundle-*"))  # the bundles live in the task views now
    for view in run.task_views():
        task = view.task
        assert view.parent_run.path == run.path and view.run_id == f"{run.run_id}-{task}"
        s = view.read_summary()
        assert s.classes == summary.tasks[task]["classes"] and s.tasks is None
        assert s.val.accuracy == pytest.approx(summary.tasks[task]["val"]["accuracy"])
        assert s.calibration and s.calibration["temperature"] > 0
        preds = load_predictions(view.predictions)
        val = preds.splits["val"]
        assert preds.classes == s.classes
        assert val.paths == results["splits"][task]["val"]["paths"]
        assert val.labels.tolist() == results["splits"][task]["val"]["labels"]
        assert val.predicted.tolist() == results["splits"][task]["val"]["predicted"]
        assert all((root / p).is_file() for p in val.paths)  # relative to the view's data root
        cfg = TrainConfig.load(view.config)
        assert cfg.tasks == "" and Path(cfg.data) == root.resolve()
        record = json.loads((view.path / "record.json").read_text())
        assert record["dataset"]["classes"] == s.classes and record["dataset"]["content_hash"]
        assert (view.bundle_dir / "record.json").is_file() and (view.path / "dataset.json").is_file()
        history = view.read_metrics()
        assert len(history) == 5 and "tasks" not in history[0]
        assert history[-1]["val_acc"] == run.read_metrics()[-1]["tasks"][task]["val_acc"]
        assert view.read_status()["status"] == "completed"
        source = read_source(str(view.path), weights=False)  # "train from this run" works on a task
        assert source.classes == s.classes and source.name == view.run_id


def test_task_bundle_alone_with_plain_timm_reproduces_its_accuracy(trained):
    run, root = trained
    for view in run.task_views():
        model = timm.create_model(f"local-dir:{view.bundle_dir}", pretrained=True).eval()
        s = view.read_summary()
        assert model.pretrained_cfg["label_names"] == s.classes
        config = json.loads((view.bundle_dir / "config.json").read_text())
        assert config["temperature"] == pytest.approx(s.calibration["temperature"])  # calibration ships
        transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
        val = load_predictions(view.predictions).splits["val"]
        with torch.inference_mode():
            predicted = model(torch.stack([transform(load_image(root / p)) for p in val.paths])).argmax(1).numpy()
        assert predicted.tolist() == val.predicted.tolist()
        assert float((predicted == val.labels).mean()) == pytest.approx(s.val.accuracy)


def test_inspect_serves_a_task_view(trained):
    run, root = trained
    view = open_view(run.task_view("light"))
    data = view.dataset()  # the task's labeled images with the run's split, not the image folder's "classes"
    s = view.summary
    assert data.classes == ["bright", "dark"] and len(data.val) == s.val.num
    assert len(data.train) == s.num_train and all(Path(x.path).is_file() for x in data.train)
    assert calibration_report(view)["num"] == s.val.num
    assert len(loss_table(view.preds.splits["val"], view.classes, view.temperature)) == s.val.num
    train = score_training(view)
    assert train.labels.tolist() == [x.label for x in data.train]


@pytest.mark.slow
def test_every_inspect_report_of_a_task_view(trained):
    run, _ = trained
    index = inspect_run(run.task_view("hue"), saliency_images=2)  # all the Inspect page shows, written to disk
    assert index["dataset_found"] and {"mislabels", "saliency", "embedding", "duplicates"} <= set(index["reports"])


def test_multi_output_onnx_matches_the_torch_model_and_names_outputs_after_tasks(trained):
    run, root = trained
    check = export_multitask_run(run, "onnx")
    assert check.passed, check.reason
    assert set(check.tasks) == {"hue", "light"} and all(c.agree_with_run == 1.0 for c in check.tasks.values())
    path = run.path / "exports" / "multitask-onnx" / check.file
    graph = onnx.load(str(path))
    assert [o.name for o in graph.graph.output] == ["hue", "light"]
    meta = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(meta["tasks"]) == {"hue": ["blue", "red"], "light": ["bright", "dark"]}
    model, tasks, temps, first = load_task_models(run)
    images = task_images(run)
    x = torch.stack([first.transform(load_image(p)) for p in images.paths])  # a batch of every validation image
    with torch.inference_mode():
        expected = Probabilities(model, list(temps.values())).eval()(x)
    got = MultiOnnxRunner(path)(x.numpy())
    for t, task in enumerate(tasks):
        np.testing.assert_allclose(got[task], expected[t].numpy(), atol=1e-4)
    # the TorchScript file carries the same temperatures: the same probabilities
    module, _, _ = load_multitask_torchscript(run.path / "multitask.torchscript.pt")
    with torch.inference_mode():
        scripted = module(x)
    for t, task in enumerate(tasks):
        np.testing.assert_allclose(scripted[t].numpy(), got[task], atol=1e-4)


def test_multi_output_int8_is_checked_per_task(trained):
    run, _ = trained
    check = export_multitask_run(run, "onnx-int8")
    assert check.method == "static" and check.reference_bytes > check.bytes
    for c in check.tasks.values():  # each task judged by the single-task int8 rule
        assert c.images > 0 and (c.passed == (c.run_accuracy - c.accuracy <= 0.015 + 1e-9))
    assert check.passed == all(c.passed for c in check.tasks.values())


def test_single_task_export_check_runs_on_a_task_view(trained):
    from core.export.artifacts import export_run
    run, _ = trained
    check = export_run(run.task_view("hue"), "onnx")
    assert check.passed and check.images == run.task_view("hue").read_summary().val.num


def test_cli_addresses_a_task(trained, capsys, tmp_path):
    run, root = trained
    assert main(["runs", "--out", str(run.path.parent)]) == 0
    listed = capsys.readouterr().out
    assert "task hue" in listed and str(run.path / "tasks" / "light") in listed
    image = str(root / "imgs" / "red_bright_3.png")
    assert main(["predict", str(run.path), image, "--task", "hue", "--topk", "1", "--json"]) == 0
    top = json.loads(capsys.readouterr().out.strip())["top"][0]
    assert top["class"] in ("blue", "red")
    assert main(["predict", str(run.path), image]) == 2  # which task? the message says
    assert "--task (hue, light)" in capsys.readouterr().err
    assert main(["export", str(run.path), "--task", "light", "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"{run.run_id}-light-model.zip").is_file()
    assert main(["export", str(run.path), "--task", "nope"]) == 2
    assert "has no task 'nope'" in capsys.readouterr().err
    assert main(["export", str(run.path)]) == 2  # a bundle is per task
    assert main(["export", str(run.path), "--format", "torchscript", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "multitask.torchscript.pt").is_file()


def test_multitask_run_stopped_before_training_finishes_cleanly(tmp_path):
    from core.engine.train import train
    root, labels = write_two_tasks(tmp_path)
    cfg = TrainConfig(data=str(root), tasks=str(labels), backbone="test_efficientnet", weights="random", img_size=64,
                      freeze="probe", epochs=2, batch_size=4, output_dir=str(tmp_path / "runs"), threads=TEST_THREADS)
    stop = threading.Event()
    stop.set()
    result = train(cfg, stop=stop)
    assert result.status == "stopped" and "stopped before any training" in result.summary.note
    run = RunDir(Path(result.run_dir))
    assert run.task_views() == [] and [r.run_id for r in list_runs(run.path.parent, task_views=True)] == [run.run_id]
