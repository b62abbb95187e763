"""ONNX, int8 ONNX and TorchScript exports: each is checked on the run's validation images before it is offered.

Tiny generated data and a tiny random model for the contract (seconds); the real ants/bees run for the must-show
figures (slow)."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from core.cli import main
from core.config import TrainConfig
from core.errors import DatasetError
from core.export.artifacts import check_images, export_run
from core.export.bundle import load_bundle
from core.export.onnx import OnnxRunner, read_metadata
from core.export.parity import INT8_MAX_ACCURACY_DROP, Agreement, export_file, read_checks, verdict
from core.export.torchscript import TorchScriptRunner
from core.runs import RunDir
from tests.conftest import copy_run


@pytest.fixture(scope="module")
def tiny_run(session_run, tmp_path_factory) -> RunDir:
    """A copy of the session's tiny probe run (3 colour classes, random tiny backbone, 64 px) that this module's
    tests export into."""
    tmp = tmp_path_factory.mktemp("exports")
    return copy_run(session_run, tmp / "runs", tmp / "data")


def bundle_probs(run: RunDir, x: np.ndarray) -> np.ndarray:
    import torch
    m = load_bundle(run.bundle_dir)
    with torch.inference_mode():
        return (m.model(torch.from_numpy(x)) / m.temperature).softmax(-1).numpy()


def test_onnx_export_agrees_with_the_run_and_describes_itself(tiny_run):
    check = export_run(tiny_run, "onnx")

    assert check.passed and check.reason == ""
    assert check.images == 6 and check.agree_with_run == 1.0 and check.agree_with_model == 1.0
    assert check.max_prob_diff < 1e-4
    meta = read_metadata(export_file(tiny_run, "onnx"))
    assert json.loads(meta["label_names"]) == ["blue", "green", "red"]
    assert json.loads(meta["preprocessing"])["input_size"] == [3, 64, 64]
    # dynamic batch: 1 and 5 images give the trained model's probabilities, which sum to one
    x = np.random.default_rng(0).normal(size=(5, 3, 64, 64)).astype(np.float32)
    runner = OnnxRunner(export_file(tiny_run, "onnx"))
    for batch in (x[:1], x):
        np.testing.assert_allclose(runner(batch), bundle_probs(tiny_run, batch), atol=1e-5)
    np.testing.assert_allclose(runner(x).sum(1), 1.0, atol=1e-5)


def test_torchscript_export_agrees_and_carries_class_names(tiny_run):
    import torch
    check = export_run(tiny_run, "torchscript")

    assert check.passed and check.agree_with_run == 1.0 and check.max_prob_diff < 1e-4
    extra = {"label_names.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notice for TorchScript
        torch.jit.load(str(export_file(tiny_run, "torchscript")), _extra_files=extra)
    assert json.loads(extra["label_names.json"]) == ["blue", "green", "red"]
    x = np.random.default_rng(1).normal(size=(3, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(TorchScriptRunner(export_file(tiny_run, "torchscript"))(x), bundle_probs(tiny_run, x),
                               atol=1e-5)


def test_checks_share_the_models_outputs_until_the_bundle_changes(session_run, tmp_path, monkeypatch):
    """The first export's check runs the trained model on the validation images; the next format's check reads
    those outputs (exports/reference.npz) instead of running it again, and a changed bundle (here: another
    calibration temperature) is checked against outputs computed afresh, not the stale ones."""
    from core.export import artifacts
    run = copy_run(session_run, tmp_path / "runs", tmp_path / "data")
    models = []
    for name in ("Probabilities", "ProbabilitiesAndUnknown"):
        cls = getattr(artifacts, name)
        monkeypatch.setattr(artifacts, name, lambda *a, cls=cls: models.append(cls) or cls(*a))

    assert export_run(run, "onnx").passed and export_run(run, "torchscript").passed
    assert len(models) == 1, "the second check ran the model again"
    config = run.bundle_dir / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "temperature": 3.0}))
    check = export_run(run, "torchscript")
    assert check.passed and check.max_prob_diff < 1e-4, check.reason  # stale outputs would differ
    assert len(models) == 2


def test_int8_export_is_statically_quantized_and_reports_its_gains(tiny_run):
    check = export_run(tiny_run, "onnx-int8")

    assert check.method == "static"
    assert check.reference_bytes > check.bytes and check.size_ratio > 1.5
    assert check.latency_ms > 0 and check.reference_latency_ms > 0
    assert check.passed == (check.accuracy_change >= -INT8_MAX_ACCURACY_DROP - 1e-9)
    probs = OnnxRunner(export_file(tiny_run, "onnx-int8"))(np.zeros((2, 3, 64, 64), np.float32))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-3)
    assert "onnx-int8" in read_checks(tiny_run)


def test_a_check_that_finds_differences_fails_with_a_sentence():
    same = dict(images=10, agree_run=10, correct=9, correct_model=9)
    assert verdict("onnx", Agreement(agree_model=10, max_diff=1e-6, **same)) == ""
    assert "differs from the trained model's on 1 of 10" in verdict("onnx", Agreement(agree_model=9, **same))
    assert "differ from the trained model's by up to 0.2" in verdict("torchscript",
                                                                       Agreement(agree_model=10, max_diff=0.2, **same))
    assert "loses 20.0%" in verdict("onnx-int8", Agreement(images=10, agree_model=8, correct=7, correct_model=9))


def test_export_without_the_dataset_says_what_to_do(tiny_run, tmp_path, capsys):
    data = Path(TrainConfig.load(tiny_run.config).data)
    moved = shutil.move(data, tmp_path / "elsewhere")
    try:
        with pytest.raises(DatasetError, match="put the dataset back"):
            check_images(tiny_run)
        assert main(["export", str(tiny_run.path), "--format", "onnx"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and "validation images" in err[0]
    finally:
        shutil.move(moved, data)


def test_cli_export_onnx_copies_the_checked_file(tiny_run, tmp_path, capsys):
    assert main(["export", str(tiny_run.path), "--format", "onnx", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "check passed" in out and (tmp_path / "model.onnx").is_file()


@pytest.mark.slow
def test_ants_bees_exports_match_the_run(ants_bees_session_run, tmp_path):
    """Must-show: ONNX and TorchScript agree with the run on every validation image; int8 is at least 3x smaller and
    passes its check exactly when it stays within the 1-point bar (on ants/bees it loses more since the probe's head
    trains on standardised features: not met, so the check fails and says so; docs/measurements.md). Exports write
    into the run: a copy of the session's ants/bees run."""
    run = copy_run(ants_bees_session_run, tmp_path / "runs")

    for fmt in ("onnx", "torchscript"):
        check = export_run(run, fmt)
        assert check.passed and check.images == 153 and check.agree_with_run == 1.0, check
    int8 = export_run(run, "onnx-int8")
    assert int8.passed == (int8.accuracy_change >= -INT8_MAX_ACCURACY_DROP - 1e-9) and int8.size_ratio >= 3.0, int8
    assert int8.passed or f"int8 loses {-int8.accuracy_change:.1%}" in int8.reason
    assert "onnx-int8 (static)" in (run.bundle_dir / "README.md").read_text()
