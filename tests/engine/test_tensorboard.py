"""TensorBoard event files: off by default; with `tensorboard: on` the run folder holds the epoch scalars, batch
scalars, hyperparameters and the confusion matrix image, read back with TensorBoard's own reader."""

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.engine.train import train


def test_tensorboard_event_file_holds_the_epoch_scalars(tiny_config):
    result = train(tiny_config.replace(freeze="probe", epochs=3, tensorboard="on"))
    logdir = Path(result.run_dir) / "tensorboard"
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0}).Reload()

    val_acc = events.Scalars("epoch/val_acc")
    assert [e.step for e in val_acc] == [1, 2, 3]
    metrics = [line["val_acc"] for line in _metrics(result.run_dir)]
    assert [e.value for e in val_acc] == metrics
    assert len(events.Scalars("batch/loss")) >= 3
    assert events.Images("validation/confusion_matrix")
    assert events.Scalars("hparam/val_accuracy")[0].value == pytest.approx(result.summary.val.accuracy)
    assert events.PluginTagToContent("hparams")  # the config values, in TensorBoard's HParams tab


def test_no_event_files_by_default(trained_run):
    assert not (trained_run.path / "tensorboard").exists()


def _metrics(run_dir: str) -> list[dict]:
    import json
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
