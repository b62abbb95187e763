"""The multi-output ONNX export of a multi-task run, checked like a single-task export before it is offered.

One file, one input (`input0`, float32 NCHW as the task bundles' timm transform makes it, dynamic batch) and one
output per task, named after the task: its calibrated class probabilities, softmax(logits / the task's temperature).
Metadata: `tasks` (task -> class names, in output order), `temperatures`, `preprocessing`. The model is the run's task
bundles read back as one multi-head network (core/export/multitask.py); it goes through timm's ONNX exporter as the
single-task files do (core/export/onnx.py), and int8 through the same ONNX Runtime static quantization.

The check (core/export/parity.py's rules, per task): every task's validation images go through the file and through
the torch model; a float32 file must agree on every top-1 with probabilities within FLOAT_MAX_PROB_DIFF, an int8
file may lose at most INT8_MAX_ACCURACY_DROP of any task's accuracy. Files land in <run>/exports/multitask-<format>/
with check.json.

    session = onnxruntime.InferenceSession("multitask.onnx")
    meta = session.get_modelmeta().custom_metadata_map  # tasks, temperatures, preprocessing
    species, light = session.run(None, {"input0": x})    # or session.run(["species"], ...)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.analysis.predictions import load_predictions
from core.config import TrainConfig
from core.data.task_view import read_task_file
from core.errors import DatasetError
from core.export.bundle import LoadedModel
from core.export.multitask import load_task_models
from core.export.onnx import INPUT, cpu_session, quantize_int8
from core.export.parity import (
    Agreement,
    ExportCheck,
    calibration_sample,
    check_batches,
    latency_ms,
    verdict,
)
from core.files.atomic import atomic_write_json
from core.files.digest import sha256_file
from core.models.multitask import MultiHead, Probabilities
from core.runs import RunDir

FILES = {"onnx": "multitask.onnx", "onnx-int8": "multitask-int8.onnx"}
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class MultiOutputCheck:
    """check.json of a multi-output export: the file, each task's ExportCheck, and the verdict over all tasks."""

    format: str
    file: str
    bytes: int
    sha256: str
    images: int  # validation images checked (every image labeled for at least one task)
    tasks: dict[str, ExportCheck]
    passed: bool
    reason: str
    method: str = ""  # int8: "static" or "dynamic"
    reference_bytes: int = 0  # int8: the float32 file's size
    latency_ms: float = 0.0  # int8: batch-1 median on this machine's CPU
    reference_latency_ms: float = 0.0
    seconds: float = 0.0
    created: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "tasks": {t: c.to_dict() for t, c in self.tasks.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MultiOutputCheck:
        values = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        return cls(**{**values, "tasks": {t: ExportCheck.from_dict(c) for t, c in d["tasks"].items()}})

    def summary_line(self) -> str:
        line = "; ".join(f"{t}: top-1 agrees with the run on {c.agree_with_run:.1%} of {c.images}, largest "
                         f"probability difference {c.max_prob_diff:.2g}, accuracy {c.accuracy:.4f} "
                         f"({c.accuracy_change:+.4f})" for t, c in self.tasks.items())
        if self.reference_bytes:
            line += (f"; {self.reference_bytes / self.bytes:.1f}x smaller ({self.bytes / 1e6:.1f} MB), batch-1 CPU "
                     f"latency {self.latency_ms:.1f} ms vs {self.reference_latency_ms:.1f} ms float32")
        return line


@dataclass
class TaskImages:
    """Every task's validation images (the union, in task order) and, per task, which of them it labels."""

    paths: list[Path]
    labels: dict[str, np.ndarray]  # task -> label per image, -1 where the image has none for the task
    run_top1: dict[str, np.ndarray]  # task -> the run's recorded top-1 per image (-1 where unlabeled)
    train: list[Path]  # training images for int8 calibration


# ---------------------------------------------------------------------------------------------------------
# the file

def export_multitask_onnx(model: MultiHead, tasks: dict[str, list[str]], temperatures: dict[str, float],
                          data_cfg: dict, dest: Path) -> Path:
    """Export with timm's exporter, every output's batch axis dynamic, metadata in the graph; `dest` appears only
    when complete."""
    import onnx
    from timm.utils.onnx import onnx_export
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    net = copy.deepcopy(model).to("cpu").to(memory_format=torch.contiguous_format)
    wrapped = Probabilities(net, [temperatures.get(t, 1.0) for t in tasks]).eval()
    with warnings.catch_warnings():  # the legacy exporter is deprecated upstream; timm still uses it by default
        warnings.simplefilter("ignore")
        onnx_export(wrapped, str(tmp), example_input=torch.zeros(1, *data_cfg["input_size"]), input_names=[INPUT],
                    output_names=list(tasks))
    graph = onnx.load(str(tmp))
    for out in graph.graph.output:  # timm declares only the first output's batch axis dynamic
        out.type.tensor_type.shape.dim[0].dim_param = "batch"
    prep = {k: (list(v) if isinstance(v, tuple) else v) for k, v in data_cfg.items()}
    meta = {"tasks": json.dumps(tasks), "temperatures": json.dumps({t: temperatures.get(t, 1.0) for t in tasks}),
            "preprocessing": json.dumps(prep), "input": "float32 NCHW as timm.data.create_transform(**preprocessing)"
            " produces it", "output": "one output per task, named after it: softmax(logits / temperature)"}
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(tmp))
    tmp.replace(dest)
    return dest


class MultiOnnxRunner:
    """A multi-output ONNX file on ONNX Runtime's CPU provider: a batch in, task -> probabilities out."""

    def __init__(self, path: Path, threads: int = 0):
        self.session = cpu_session(path, threads)
        self.names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(None, {INPUT: np.ascontiguousarray(x, dtype=np.float32)})
        return dict(zip(self.names, outs, strict=True))


# ---------------------------------------------------------------------------------------------------------
# export and check: `export_multitask_run(run, "onnx" | "onnx-int8")`

def export_multitask_run(run: RunDir, fmt: str, progress: Progress | None = None,
                         should_stop: Callable[[], bool] = lambda: False) -> MultiOutputCheck | None:
    """Export the run's multi-output model, check it on every task's validation images, write check.json. None when
    stopped."""
    if fmt not in FILES:
        raise ValueError(f"A multi-task run exports {' or '.join(FILES)} as one multi-output file, not '{fmt}'; "
                         f"give a task (its own bundle exports every format).")
    progress = progress or (lambda *_: None)
    t0 = time.perf_counter()
    model, tasks, temps, first = load_task_models(run)
    images = task_images(run)
    out = export_dir(run, fmt)
    shutil.rmtree(out, ignore_errors=True)  # an older export of this format is replaced, never mixed with
    out.mkdir(parents=True)
    progress(f"exporting multi-output {fmt}", 0, 1)
    fp32_name = "reference-fp32.onnx" if fmt == "onnx-int8" else FILES[fmt]
    reference = export_multitask_onnx(model, tasks, temps, first.data_cfg, out / fp32_name)
    path, method = reference, ""
    if fmt == "onnx-int8":
        path = out / FILES[fmt]
        method = quantize_int8(reference, path, first.input_batches(images.train) if images.train else None)
    runner = MultiOnnxRunner(path)
    agreements = _agreements(Probabilities(model, list(temps.values())).eval(), first, runner, images, progress,
                             should_stop)
    if agreements is None:
        shutil.rmtree(out, ignore_errors=True)
        return None
    extra = {}
    if fmt == "onnx-int8":
        progress("measuring CPU latency", 0, 1)
        lat, ref_lat = latency_ms([runner, MultiOnnxRunner(reference)], first.inputs(images.paths[:1]))
        extra = {"reference_bytes": reference.stat().st_size, "latency_ms": lat, "reference_latency_ms": ref_lat}
        reference.unlink()
    size, digest = path.stat().st_size, sha256_file(path)
    checks = {t: ExportCheck(fmt, path.name, size, digest, a.images, a.share(a.agree_run), a.share(a.agree_model),
                             a.max_diff, a.share(a.correct), a.share(a.correct_model),
                             passed=not (r := verdict(fmt, a)), reason=r, method=method)
              for t, a in agreements.items()}
    failed = [f"{t}: {c.reason}" for t, c in checks.items() if not c.passed]
    check = MultiOutputCheck(fmt, path.name, size, digest, len(images.paths), checks, not failed, " ".join(failed),
                             method, seconds=time.perf_counter() - t0, created=time.time(), **extra)
    atomic_write_json(out / "check.json", check.to_dict())
    return check


def export_dir(run: RunDir, fmt: str) -> Path:
    return run.path / "exports" / f"multitask-{fmt}"


def export_file(run: RunDir, fmt: str) -> Path:
    return export_dir(run, fmt) / FILES[fmt]


def read_checks(run: RunDir) -> dict[str, MultiOutputCheck]:
    """format -> its check, for the multi-output exports this run has (file and check.json both present)."""
    out = {}
    for fmt in FILES:
        try:
            d = json.loads((export_dir(run, fmt) / "check.json").read_text(encoding="utf-8"))
            check = MultiOutputCheck.from_dict(d)
        except (FileNotFoundError, json.JSONDecodeError, TypeError, KeyError):
            continue
        if export_file(run, fmt).exists():
            out[fmt] = check
    return out


def task_images(run: RunDir) -> TaskImages:
    """Every task's validation images from its task view (predictions.npz, in recorded order), found under the
    view's image root; training images from the views' task.json for int8 calibration."""
    views = run.task_views()
    paths: dict[Path, int] = {}
    per_task: dict[str, dict[Path, tuple[int, int]]] = {}
    train: dict[Path, None] = {}
    for view in views:
        root = Path(TrainConfig.load(view.config).data)
        preds = load_predictions(view.predictions)
        if preds is None or "val" not in preds.splits:
            raise FileNotFoundError(f"Task '{view.task}' of run {run.run_id} has no validation predictions.")
        val = preds.splits["val"]
        per_task[view.task] = {root / p: (int(y), int(k)) for p, y, k in zip(val.paths, val.labels, val.predicted,
                                                                               strict=True)}
        for p in per_task[view.task]:
            paths.setdefault(p, len(paths))
        train.update({root / rel: None for rel, _ in (read_task_file(view.path) or {}).get("splits", {})
                      .get("train", [])})
    order = list(paths)
    missing = [p for p in order if not p.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} validation image(s) of run {run.run_id} are gone, e.g. {missing[0]}; "
                           f"the export cannot be checked without them. Restore them and export again.")
    labels = {t: np.array([got.get(p, (-1, -1))[0] for p in order]) for t, got in per_task.items()}
    top1 = {t: np.array([got.get(p, (-1, -1))[1] for p in order]) for t, got in per_task.items()}
    return TaskImages(order, labels, top1, calibration_sample(list(train), TrainConfig.load(run.config).seed))


def _agreements(model: Probabilities, loaded: LoadedModel, runner: MultiOnnxRunner, images: TaskImages,
                progress: Progress, should_stop: Callable[[], bool]) -> dict[str, Agreement] | None:
    """Both models over the validation images in batches, tallied per task over the images it labels."""
    tasks = list(images.labels)
    totals = {t: Agreement() for t in tasks}
    for batch, x in check_batches(images.paths, loaded.inputs, progress, should_stop):
        with torch.inference_mode():
            expected = [p.numpy() for p in model(torch.from_numpy(x))]
        got = runner(x)
        for t, task in enumerate(tasks):
            labels, top1 = images.labels[task][batch], images.run_top1[task][batch]
            rows = labels >= 0
            totals[task].add(got[task][rows], expected[t][rows], top1[rows], labels[rows])
    return None if should_stop() else totals

