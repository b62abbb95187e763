"""Job registry: background thread, queue, snapshots, stop, recorded failures."""

import json
import threading
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


def test_any_long_task_runs_as_a_job_with_phases_stop_and_failure(tiny_folder):
    """The queue, stop flag, progress phases and snapshots serve tasks other than training (ranking backbones,
    an LR range test, an export with a parity check...): here, opening a real dataset image by image."""
    from core.data.dataset import open_dataset
    from core.runs import Status
    reg = JobRegistry()
    release = threading.Event()

    def check_images(job):
        ds = open_dataset(tiny_folder)
        for i, sample in enumerate(ds.train, start=1):
            assert release.wait(60), "the test did not release the task within 60 s"
            if job.stop_event.is_set():
                return {"checked": i - 1}
            Path(sample.path).read_bytes()
            job.on_phase("checking images", i, len(ds.train))
        return {"checked": len(ds.train)}

    done = reg.submit_task("check", "check the tiny images", check_images)
    release.set()
    snap = wait(done)
    assert snap.status == Status.COMPLETED and snap.kind == "check" and snap.result == {"checked": 18}
    assert (snap.phase, snap.phase_done, snap.phase_total) == ("checking images", 18, 18) and snap.progress == 1.0

    release.clear()
    stopped = reg.submit_task("check", "stopped half-way", check_images)
    deadline = time.time() + 60
    while reg.snapshot(stopped.job_id).status == Status.QUEUED:
        assert time.time() < deadline, "the second task did not start within 60 s"
        time.sleep(0.01)
    stopped.request_stop()
    release.set()
    snap = wait(stopped)
    assert snap.status == Status.STOPPED and snap.result == {"checked": 0}

    def broken(job):
        raise ValueError("The backbone list is empty: add one and try again.")
    snap = wait(reg.submit_task("rank", "ranking", broken))
    assert snap.status == Status.FAILED and snap.error == "The backbone list is empty: add one and try again."
    assert "ValueError" in snap.traceback


def test_ast_parse_runs_one_thread_at_a_time_where_jobs_run(tmp_path):
    """CPython 3.11.7 failed the Label page test with "AST constructor recursion depth mismatch": a job's np.load
    (which parses each .npy header) ran while Streamlit parsed a page. With core.jobs imported, a parse waits for
    the one under way: a job's np.load is held while the lock is, and finishes once it is released."""
    import ast

    import numpy as np

    import core.jobs  # noqa: F401  (installs the lock)
    np.save(tmp_path / "a.npy", np.arange(3))
    loaded = []
    reader = threading.Thread(target=lambda: loaded.append(np.load(tmp_path / "a.npy")))
    with ast.parse.lock:
        reader.start()
        reader.join(timeout=0.5)
        assert reader.is_alive() and not loaded  # its header parse waits for the lock
    reader.join()
    assert list(loaded[0]) == [0, 1, 2]
