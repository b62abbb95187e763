"""The check every export passes before it is offered: does the exported file predict what the run does?

Run on the run's validation images, each transformed once by the bundle's timm transform, fed to the trained
model (torch, with the bundle's temperature) and to the exported file. Figures: top-1 agreement with the run's
recorded predictions (predictions.npz, what the Results page shows) and with the torch model on the same inputs,
the largest probability difference, the accuracy change, and for int8 the size and the batch-1 CPU latency
against the float32 ONNX file. The pass rules are the constants below; a failed check says which rule.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.files.atomic import atomic_write_json
from core.runs import RunDir

FLOAT_MAX_PROB_DIFF = 1e-3  # float32 exports: measured 6e-7 (ONNX) on ants/bees; more means a wrong graph
# int8: at most 1 point of validation accuracy lost (the deliver issue's bar; issue 23 put it back after it had been
# raised to 1.5). A file over it is not offered as equivalent: its check fails and says by how much
# (`python -m bench.int8`, docs/measurements.md).
INT8_MAX_ACCURACY_DROP = 0.01
LATENCY_REPEATS = 20
FILES = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx", "torchscript": "model.torchscript.pt"}
FORMATS = tuple(FILES)


@dataclass(frozen=True)
class ExportCheck:
    """check.json beside an export: the figures shown next to its download button and in the model card."""

    format: str
    file: str  # file name inside exports/<format>/
    bytes: int
    sha256: str
    images: int  # validation images checked
    agree_with_run: float  # share of images whose top-1 equals the run's recorded top-1
    agree_with_model: float  # ... equals the torch model's top-1 on the same transformed input
    max_prob_diff: float  # largest |p_export - p_model| over images and classes
    accuracy: float
    run_accuracy: float  # the torch model's accuracy on the same images and inputs
    passed: bool
    reason: str  # why it failed, or "" when it passed
    method: str = ""  # int8: "static" or "dynamic"
    reference_bytes: int = 0  # int8: the float32 ONNX file's size
    latency_ms: float = 0.0  # int8: batch-1 median on this machine's CPU
    unknown_agree: float | None = None  # ONNX with the unknown-input outputs: share of images with the same decision
    reference_latency_ms: float = 0.0  # int8: the float32 ONNX file, measured alternately with it
    seconds: float = 0.0  # export + check
    created: float = 0.0

    @property
    def accuracy_change(self) -> float:
        return self.accuracy - self.run_accuracy

    @property
    def size_ratio(self) -> float:
        return self.reference_bytes / self.bytes if self.reference_bytes and self.bytes else 0.0

    @property
    def speedup(self) -> float:
        return self.reference_latency_ms / self.latency_ms if self.latency_ms else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "accuracy_change": self.accuracy_change, "size_ratio": self.size_ratio,
                "speedup": self.speedup}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExportCheck:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def summary_line(self) -> str:
        """One line for the page and the CLI."""
        head = (f"top-1 agrees with the run on {self.agree_with_run:.1%} of {self.images} validation images, "
                f"largest probability difference {self.max_prob_diff:.2g}, accuracy {self.accuracy:.4f} "
                f"({self.accuracy_change:+.4f})")
        if self.reference_bytes:
            head += (f"; {self.size_ratio:.1f}x smaller ({self.bytes / 1e6:.1f} MB), batch-1 CPU latency "
                     f"{self.latency_ms:.1f} ms vs {self.reference_latency_ms:.1f} ms float32")
        if self.unknown_agree is not None:
            head += f"; the unknown-input decision agrees on {self.unknown_agree:.1%}"
        return head


@dataclass
class Agreement:
    """Running totals over batches: the check never holds every transformed image at once."""

    images: int = 0
    agree_run: int = 0
    agree_model: int = 0
    correct: int = 0
    correct_model: int = 0
    max_diff: float = 0.0
    unknown_images: int = 0  # images whose unknown-input decision was compared (exports with that output)
    unknown_agree: int = 0

    def add_unknown(self, exported: np.ndarray, model: np.ndarray) -> None:
        self.unknown_images += len(exported)
        self.unknown_agree += int((np.asarray(exported, bool) == np.asarray(model, bool)).sum())

    def add(self, exported: np.ndarray, model: np.ndarray, run_top1: np.ndarray, labels: np.ndarray) -> None:
        top = exported.argmax(1)
        self.images += len(top)
        self.agree_run += int((top == run_top1).sum())
        self.agree_model += int((top == model.argmax(1)).sum())
        self.correct += int((top == labels).sum())
        self.correct_model += int((model.argmax(1) == labels).sum())
        self.max_diff = max(self.max_diff, float(np.abs(exported - model).max())) if len(top) else self.max_diff

    def share(self, n: int) -> float:
        return n / self.images if self.images else 0.0


def verdict(fmt: str, a: Agreement) -> str:
    """'' when the export may be offered as good, else the rule it broke, as a sentence."""
    if not a.images:
        return "There were no validation images to check it on."
    if fmt.endswith("int8"):
        drop = a.share(a.correct_model) - a.share(a.correct)
        return "" if drop <= INT8_MAX_ACCURACY_DROP + 1e-9 else \
            f"int8 loses {drop:.1%} of validation accuracy (at most {INT8_MAX_ACCURACY_DROP:.1%} is accepted)."
    if a.unknown_agree < a.unknown_images:
        return f"Its unknown-input decision differs from the bundle's on {a.unknown_images - a.unknown_agree} of " \
               f"{a.unknown_images} images."
    if a.agree_model < a.images:
        return f"Its top-1 differs from the trained model's on {a.images - a.agree_model} of {a.images} images."
    if a.max_diff > FLOAT_MAX_PROB_DIFF:
        return f"Its probabilities differ from the trained model's by up to {a.max_diff:.2g} (allowed " \
               f"{FLOAT_MAX_PROB_DIFF:g})."
    return ""


def latency_ms(runners: list[Callable[[np.ndarray], np.ndarray]], x: np.ndarray,
               repeats: int = LATENCY_REPEATS) -> list[float]:
    """Median batch-1 latency of each runner, measured in alternation (this VM's speed drifts within a minute,
    so back-to-back blocks would compare different machines)."""
    for run in runners:
        run(x)  # warm-up: session memory, kernels
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(repeats):
        for i, run in enumerate(runners):
            t = time.perf_counter()
            run(x)
            times[i].append(time.perf_counter() - t)
    return [1000 * float(np.median(t)) for t in times]


def write_check(path: Path, check: ExportCheck) -> None:
    atomic_write_json(path, check.to_dict())


def read_check(path: Path) -> ExportCheck | None:
    try:
        return ExportCheck.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (FileNotFoundError, json.JSONDecodeError, TypeError, KeyError):
        return None


def exports_dir(run: RunDir) -> Path:
    return run.path / "exports"


def export_file(run: RunDir, fmt: str) -> Path:
    return exports_dir(run) / fmt / FILES[fmt]


def read_checks(run: RunDir) -> dict[str, ExportCheck]:
    """format -> its check, for the exports this run has (file and check.json both present)."""
    out = {}
    for fmt in FILES:
        check = read_check(exports_dir(run) / fmt / "check.json")
        if check is not None and export_file(run, fmt).exists():
            out[fmt] = check
    return out


CHECK_BATCH = 16  # validation images per batch when an export is checked
CHECK_PHASE = "checking on validation images"
CALIBRATION_MAX = 300  # training images for int8 ranges (ants/bees: all 244; more changes little, costs time)


def check_batches(paths: list[str], inputs: Callable[[list[str]], np.ndarray],
                  progress: Callable[[str, int, int], None], should_stop: Callable[[], bool],
                  ) -> Iterator[tuple[slice, np.ndarray]]:
    """The check images in batches of CHECK_BATCH: (their rows, the model input `inputs` makes of them), with
    progress; ends early when should_stop() says so (the caller then reports the check as stopped)."""
    n = len(paths)
    for i in range(0, n, CHECK_BATCH):
        if should_stop():
            return
        progress(CHECK_PHASE, i, n)
        yield slice(i, i + CHECK_BATCH), inputs(paths[i:i + CHECK_BATCH])
    progress(CHECK_PHASE, n, n)


def calibration_sample(paths: list[Path], seed: int) -> list[Path]:
    """The training images int8 ranges are calibrated on: all of them, or CALIBRATION_MAX drawn with the run's
    seed (in their order)."""
    if len(paths) <= CALIBRATION_MAX:
        return list(paths)
    keep = np.random.default_rng(seed).choice(len(paths), CALIBRATION_MAX, replace=False)
    return [paths[i] for i in sorted(keep)]
