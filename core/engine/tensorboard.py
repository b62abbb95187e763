"""TensorBoard event files for a run (config `tensorboard: on`): the experiment log ML people already read.

A Callback (it observes, never steers): scalars per batch (loss, learning rate, images/s) and per epoch (train and
validation loss and accuracy), the hyperparameters with the final metrics, and the validation confusion matrix as
an image, under `<run>/tensorboard/`. Local files only; `tensorboard --logdir runs` compares runs.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from core.config import TrainConfig
from core.engine.callbacks import BatchMetrics, Callback, EpochMetrics, FitInfo, FitResult
from core.errors import ConfigError
from core.runs import RunDir

CELL = 56  # pixels per confusion-matrix cell
MARGIN = 110  # room for class names


def experiment_logs(cfg: TrainConfig, run: RunDir) -> list[Callback]:
    """The logging callbacks cfg asks for (none by default)."""
    return [TensorBoardLogger(cfg, run)] if cfg.tensorboard == "on" else []


class TensorBoardLogger(Callback):
    def __init__(self, cfg: TrainConfig, run: RunDir):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("tensorboard: 'on' needs the tensorboard package (pip install tensorboard), or set "
                              "it to 'off'.") from None
        self.cfg, self.logdir = cfg, run.path / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.logdir))
        self.steps = 0

    def on_fit_start(self, info: FitInfo) -> None:
        self.steps = info.steps_per_epoch
        self.writer.add_text("run", f"{info.mode} on {info.device}: {', '.join(info.classes)}; "
                                    f"{info.trainable_params:,} of {info.total_params:,} parameters trainable")

    def on_batch_end(self, m: BatchMetrics) -> None:
        step = (m.epoch - 1) * m.steps_per_epoch + m.step
        self.writer.add_scalar("batch/loss", m.loss, step)
        self.writer.add_scalar("batch/lr", m.lr, step)
        self.writer.add_scalar("batch/images_per_sec", m.images_per_sec, step)

    def on_epoch_end(self, m: EpochMetrics) -> None:
        for name in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_sec", "seconds"):
            self.writer.add_scalar(f"epoch/{name}", getattr(m, name), m.epoch)
        self.writer.flush()  # readable while the run goes on

    def on_fit_end(self, result: FitResult) -> None:
        s = result.summary
        metrics = {"hparam/val_accuracy": s.val.accuracy, "hparam/val_macro_f1": s.val.macro_f1} if s.val else {}
        if s.test:
            metrics["hparam/test_accuracy"] = s.test.accuracy
        hparams = {k: v for k, v in self.cfg.portable().to_dict().items() if isinstance(v, (int, float, str, bool))}
        self.writer.add_hparams(hparams, metrics, run_name=".")
        if s.val:
            image = confusion_image(s.val.confusion_matrix, s.classes)
            self.writer.add_image("validation/confusion_matrix", image, s.epochs_run, dataformats="HWC")
        self.writer.close()

    def on_exception(self, exc: BaseException) -> None:
        self.writer.close()


def confusion_image(matrix: list[list[int]], classes: list[str]) -> np.ndarray:
    """Rows = true class, columns = predicted; shade by the row's share, the count written in each cell."""
    m = np.asarray(matrix, dtype=float)
    n = len(classes)
    img = Image.new("RGB", (MARGIN + n * CELL, MARGIN + n * CELL), "white")
    draw = ImageDraw.Draw(img)
    shares = m / np.maximum(m.sum(1, keepdims=True), 1)
    for i in range(n):
        draw.text((4, MARGIN + i * CELL + CELL // 2 - 6), classes[i][:16], fill="black")
        draw.text((MARGIN + i * CELL + 2, MARGIN - 16), classes[i][:8], fill="black")
        for j in range(n):
            shade = int(255 - 200 * shares[i, j])
            box = (MARGIN + j * CELL, MARGIN + i * CELL, MARGIN + (j + 1) * CELL - 1, MARGIN + (i + 1) * CELL - 1)
            draw.rectangle(box, fill=(shade, shade, 255))
            draw.text((box[0] + CELL // 3, box[1] + CELL // 3), str(int(m[i, j])),
                      fill="white" if shares[i, j] > 0.5 else "black")
    draw.text((4, 4), "true \\ predicted", fill="black")
    return np.asarray(img)
