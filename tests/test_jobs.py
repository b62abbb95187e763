"""Job registry: background thread, queue, snapshots, stop, recorded failures."""

import json
import time
from pathlib import Path

import pytest

from core.jobs import JobRegistry


def wait(job, timeout=120):
    assert job.finished.wait(timeout), "job did not finish in time"
    return job.snapshot()


def test_job_completes_with_history(tiny_config):
    reg = JobRegistry()
    job = reg.submit(tiny_config.replace(freeze="probe", epochs=3))
    snap = wait(job)
    assert snap.status == "completed", snap.error
    assert [e.epoch for e in snap.epochs] == [1, 2, 3] and snap.progress == 1.0
    best = max(snap.epochs, key=lambda e: (e.val_acc, -e.val_loss))  # the engine's best: accuracy, then loss
    assert best.val_acc >= 0.8  # three separable colours (chance 1/3); 6 val images, so one may be wrong
    assert snap.summary.val_accuracy == pytest.approx(best.val_acc)  # the summary reports the best weights
    assert snap.summary.best_epoch == best.epoch
    assert snap.info.trainable_params < snap.info.total_params  # probe: only the head trains


def test_second_job_queues_then_runs(tiny_config):
    reg = JobRegistry()
    first = reg.submit(tiny_config.replace(freeze="full", epochs=4))
    second = reg.submit(tiny_config.replace(freeze="probe", epochs=1))
    snap = reg.snapshot(second.job_id)
    assert snap.status == "queued" and snap.queue_position == 2
    assert wait(first).status == "completed"
    assert wait(second).status == "completed"


def test_stop_a_running_job(tiny_config):
    reg = JobRegistry()
    job = reg.submit(tiny_config.replace(freeze="full", epochs=200))
    deadline = time.time() + 60
    while not reg.snapshot(job.job_id).batches and time.time() < deadline:
        time.sleep(0.05)
    reg.stop(job.job_id)
    snap = wait(job)
    assert snap.status == "stopped"
    assert len(snap.epochs) < 200
    assert Path(snap.run_dir, "bundle", "model.safetensors").exists()


def test_failure_is_recorded_not_swallowed(tiny_config, tmp_path):
    reg = JobRegistry()
    job = reg.submit(tiny_config.replace(weights=str(tmp_path / "missing.safetensors")))
    snap = wait(job)
    assert snap.status == "failed"
    assert "missing.safetensors does not exist" in snap.error
    assert "Traceback" in snap.traceback
    status = json.loads(Path(snap.run_dir, "status.json").read_text())
    assert status["status"] == "failed" and "missing.safetensors" in status["error"]
