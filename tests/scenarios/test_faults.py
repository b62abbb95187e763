"""Training faults lose nothing: a killed run resumes, a diverging run stops with advice, a full disk
leaves the previous checkpoint intact."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import TrainConfig
from core.jobs import JobRegistry
from core.runs import RunDir, Status, list_runs

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # two processes (about 10 s); test-fast resumes stopped runs in-process (engine tests)
def test_sigkill_mid_training_then_resume(tiny_folder, tmp_path):
    out = tmp_path / "runs"
    epochs = 10  # the kill comes after the first checkpoint: the run is stopped mid-way, whatever the machine's load
    cmd = [sys.executable, "-m", "core", "train", "--data", str(tiny_folder), "--backbone", "test_efficientnet",
           "--weights", "random", "--img-size", "64", "--epochs", str(epochs), "--freeze", "full", "--batch-size", "4",
           "--early-stopping", "0", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    run = None
    while time.time() < deadline and proc.poll() is None:
        runs = list_runs(out)
        if runs and runs[0].last_checkpoint.exists() and runs[0].read_metrics():
            run = runs[0]
            break
        time.sleep(0.02)
    assert run is not None, f"no checkpoint appeared: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the finished epochs as the killed process wrote them (a line cut mid-write is not a finished epoch)
    before = [line for line in run.metrics.read_text().splitlines(keepends=True) if line.endswith("\n")]
    assert 1 <= len(before) < epochs
    assert run.read_status()["status"] == "interrupted"

    p = subprocess.run([sys.executable, "-m", "core", "train", "--resume", str(run.path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    after = run.metrics.read_text().splitlines(keepends=True)
    assert after[:len(before)] == before  # kept as they were (same elapsed times), not trained again
    assert [m["epoch"] for m in run.read_metrics()] == list(range(1, epochs + 1))
    trained_now = [int(n) for n in re.findall(r"epoch (\d+): train loss", p.stderr)]  # the progress lines
    assert trained_now == list(range(len(before) + 1, epochs + 1))
    summary = run.read_summary()
    assert summary.status == "completed" and summary.epochs_run == epochs and summary.has_results
    assert (run.bundle_dir / "model.safetensors").exists()
    assert run.read_status()["status"] == "completed"


def test_a_running_run_whose_process_is_gone_reads_as_interrupted(tmp_path):
    """What the SIGKILL test above sees, in milliseconds: status.json says running, its process no longer exists."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_status(Status.RUNNING)
    assert run.read_status()["status"] == Status.RUNNING  # this process: alive
    status = json.loads(run.status_file.read_text())
    run.status_file.write_text(json.dumps({**status, "pid": gone.pid}))
    assert run.read_status()["status"] == Status.INTERRUPTED


def test_diverging_loss_stops_with_advice_and_keeps_best(tiny_folder, tmp_path):
    cfg = TrainConfig(data=str(tiny_folder), backbone="test_vit", weights="random", img_size=64, epochs=3,
                      batch_size=4, lr=1.0, optimizer="sgd", freeze="full", backbone_lr_mult=1.0,
                      label_smoothing=0.0, scheduler="constant", weight_decay=0.0, output_dir=str(tmp_path))
    job = JobRegistry().submit(cfg)
    assert job.finished.wait(120)
    snap = job.snapshot()
    assert snap.status == "failed"
    assert "training diverged. Lower the learning rate (now 1, try 0.1)" in snap.error
    run = RunDir(Path(snap.run_dir))
    assert run.read_status()["status"] == "failed"
    assert run.best_weights.exists()  # the last good epoch is still there


def test_full_disk_leaves_previous_checkpoint_intact(tmp_path):
    """A real write failure (file-size limit, EFBIG) in a child process during an atomic save."""
    target = tmp_path / "best.safetensors"
    target.write_bytes(b"previous checkpoint")
    code = f"""
import resource, signal
from pathlib import Path
from core.files.atomic import atomic_write_bytes
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    atomic_write_bytes(Path({str(target)!r}), b"x" * 1_000_000)
except OSError as exc:
    print("failed:", exc.errno)
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "failed: 27" in p.stdout, p.stdout + p.stderr  # EFBIG
    assert target.read_bytes() == b"previous checkpoint"
    assert [f.name for f in tmp_path.iterdir()] == ["best.safetensors"]  # no temp file left behind


def test_weights_with_nan_are_refused(tmp_path):
    from safetensors.torch import save_file

    from core.errors import WeightsError
    from core.models.backbones import create_model
    state = create_model(TrainConfig(weights="random"), 2).state_dict()
    state["conv_stem.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, tmp_path / "nan.safetensors")
    with pytest.raises(WeightsError, match="nan.safetensors holds NaN or infinite values in 1 tensor"):
        create_model(TrainConfig(weights=str(tmp_path / "nan.safetensors")), 2)


def test_same_seed_gives_identical_runs_on_cpu(tiny_config):
    """Same seed, same config: two runs give identical metrics (repeatable on CPU)."""
    from core.engine.train import train
    a = train(tiny_config.replace(freeze="full", epochs=2))
    b = train(tiny_config.replace(freeze="full", epochs=2))
    rows = [[{k: v for k, v in m.items() if k in ("train_loss", "val_loss", "val_acc")} for m in
             RunDir(Path(r.run_dir)).read_metrics()] for r in (a, b)]
    assert rows[0] == rows[1]
    assert a.summary.val.confusion_matrix == b.summary.val.confusion_matrix
    assert a.summary.val.per_class == b.summary.val.per_class
