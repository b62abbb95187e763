"""The multi-output export of a multi-task run: one TorchScript file that answers every task in one pass, and the
task bundles (each task view's bundle/, core/engine/task_views.py) read back as one multi-head model.

Input: float32 NCHW as timm.data.create_transform(**preprocessing) produces it (the same for every task bundle).
Output: a tuple of class-probability tensors, one per task, in the order of `tasks.json` (task -> class names),
each softmax(logits / the task's calibration temperature, `temperatures.json`); these ride along as extra files
with `preprocessing.json`:

    files = {"tasks.json": "", "preprocessing.json": "", "temperatures.json": ""}
    model = torch.jit.load("multitask.torchscript.pt", _extra_files=files)
    species_probs, orientation_probs = model(x)

The ONNX form of the same model is core/export/multitask_onnx.py.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch

from core.export.bundle import LoadedModel, load_bundle
from core.models.multitask import MultiHead, Probabilities, multitask_from_task_models
from core.runs import TASKS_DIR, RunDir

FILE = "multitask.torchscript.pt"


def export_multitask_torchscript(model: MultiHead, tasks: dict[str, list[str]], data_cfg: dict, dest: Path,
                                 temperatures: dict[str, float] | None = None) -> Path:
    """Trace a CPU copy of `model` (softmax per task, each task's temperature) and save it with its metadata; `dest`
    appears only when complete."""
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    net = copy.deepcopy(model).to("cpu").to(memory_format=torch.contiguous_format)
    temps = {t: float((temperatures or {}).get(t, 1.0)) for t in tasks}
    wrapped = Probabilities(net, list(temps.values())).eval()
    prep = {k: (list(v) if isinstance(v, tuple) else v) for k, v in data_cfg.items()}
    extra = {"tasks.json": json.dumps(tasks), "preprocessing.json": json.dumps(prep),
             "temperatures.json": json.dumps(temps)}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the deprecation notice, and tracer notes on TF "same" padding
        traced = torch.jit.freeze(torch.jit.trace(wrapped, torch.zeros(1, *data_cfg["input_size"]),
                                                  check_trace=False))
        torch.jit.save(traced, str(tmp), _extra_files=extra)
    tmp.replace(dest)
    return dest


def load_multitask_torchscript(path: Path) -> tuple[torch.jit.ScriptModule, dict[str, list[str]], dict]:
    """(module, task -> classes, preprocessing) of a saved multi-output file."""
    files = {"tasks.json": "", "preprocessing.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=files).eval()
    return module, json.loads(files["tasks.json"]), json.loads(files["preprocessing.json"])


def task_bundle_dir(run_path: Path, task: str) -> Path:
    """A task's bundle folder: its task view's bundle/ (runs made before task views: bundle-<task>/)."""
    run_path = Path(run_path)
    folder = RunDir(run_path / TASKS_DIR / task).bundle_dir
    return folder if folder.is_dir() or not (run_path / f"bundle-{task}").is_dir() else run_path / f"bundle-{task}"


def load_task_models(run: RunDir) -> tuple[MultiHead, dict[str, list[str]], dict[str, float], LoadedModel]:
    """A multi-task run's model rebuilt from its task bundles (timm's loader): (the multi-head model, task ->
    classes, task -> temperature, the first task's LoadedModel: its preprocessing and transform are every task's)."""
    views = run.task_views()
    if not views:
        raise FileNotFoundError(f"Run {run.run_id} has no task bundles (it is not a finished multi-task run).")
    loaded = {v.task: load_bundle(v.bundle_dir) for v in views}
    model = multitask_from_task_models([m.model for m in loaded.values()])
    return (model, {t: m.classes for t, m in loaded.items()}, {t: m.temperature for t, m in loaded.items()},
            next(iter(loaded.values())))


def task_bundle_zip(run_path: Path, task: str) -> Path:
    """Zip one task's bundle folder into <run>/<run_id>-<task>-model.zip (a temp name, renamed)."""
    import zipfile
    run_path = Path(run_path)
    folder = task_bundle_dir(run_path, task)
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"Run {run_path.name} has no bundle for task '{task}'.")
    out = run_path / f"{run_path.name}-{task}-model.zip"
    tmp = out.with_suffix(".zip.partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"{run_path.name}-{task}/{f.name}")
    tmp.replace(out)
    return out
