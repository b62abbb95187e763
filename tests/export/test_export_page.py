"""The Export page: an export runs as a job and is offered with its check's figures; a failed check is not offered."""

import json

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.export.artifacts import export_run
from core.export.parity import exports_dir
from tests.conftest import copy_run, wait_for_jobs

APP = "../../app.py"


@pytest.fixture
def app_with_run(session_run, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("TRANSFERLAB_DATA_ROOTS", str(tmp_path))
    st.cache_resource.clear()  # the job registry is process-global
    run = copy_run(session_run, tmp_path / "ws" / "runs", tmp_path / "run-data")
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/export.py").run()
    assert not at.exception
    return at, run


def download_keys(at) -> set[str]:
    return {b.key for b in at.get("download_button")}


def test_export_job_offers_the_file_with_its_check(app_with_run):
    at, run = app_with_run
    assert "dl_onnx" not in download_keys(at)
    at.button(key="make_onnx").click().run()
    wait_for_jobs(at)
    assert not at.exception
    assert "dl_onnx" in download_keys(at)
    assert any("Check passed: top-1 agrees with the run on 100.0% of 6" in c.value for c in at.caption)


def test_a_failed_check_is_not_offered(app_with_run):
    at, run = app_with_run
    export_run(run, "torchscript")
    check_file = exports_dir(run) / "torchscript" / "check.json"
    check = json.loads(check_file.read_text())
    check_file.write_text(json.dumps({**check, "passed": False, "reason": "Its top-1 differs on 1 of 6 images."}))
    at.run()
    assert not at.exception
    assert "dl_torchscript" not in download_keys(at)
    assert any("failed its check. Its top-1 differs on 1 of 6 images." in w.value for w in at.warning)


def test_the_loading_snippet_prints_predicts_probabilities(app_with_run, tmp_path, monkeypatch):
    """The Export page's snippet divides by the temperature the bundle ships, so it gives what Predict gives."""
    import shutil

    import numpy as np

    from core.export.bundle import load_bundle
    at, run = app_with_run
    config = run.bundle_dir / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "temperature": 2.5}))  # a calibrated bundle
    at.run()
    (snippet,) = [c.value for c in at.code if "local-dir:" in c.value]
    assert "/ 2.5)" in snippet
    photo = sorted((tmp_path / "run-data" / "colors").rglob("*.png"))[0]  # the run's data (copy_run)
    shutil.copytree(run.bundle_dir, tmp_path / "unzipped" / run.run_id)
    monkeypatch.chdir(tmp_path / "unzipped")
    scope: dict = {}
    exec(snippet.replace("photo.jpg", str(photo)), scope)  # noqa: S102 - the page's own code
    model = load_bundle(run.bundle_dir)
    predicted = dict(model.predict([photo], topk=len(model.classes))[0])
    assert np.allclose([predicted[c] for c in model.classes], scope["probs"].numpy(), atol=1e-5)
