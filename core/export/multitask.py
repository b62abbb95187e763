"""The multi-output export of a multi-task run: one TorchScript file that answers every task in one pass.

Input: float32 NCHW as timm.data.create_transform(**preprocessing) produces it (the same for every task bundle).
Output: a tuple of class-probability tensors, one per task, in the order of `tasks.json` (task -> class names),
which rides along as an extra file with `preprocessing.json`:

    files = {"tasks.json": "", "preprocessing.json": ""}
    model = torch.jit.load("multitask.torchscript.pt", _extra_files=files)
    species_probs, orientation_probs = model(x)
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch

from core.models.multitask import MultiHead, Probabilities

FILE = "multitask.torchscript.pt"


def export_multitask_torchscript(model: MultiHead, tasks: dict[str, list[str]], data_cfg: dict, dest: Path) -> Path:
    """Trace a CPU copy of `model` (softmax per task) and save it with its metadata; `dest` appears only when
    complete."""
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    net = copy.deepcopy(model).to("cpu").to(memory_format=torch.contiguous_format)
    wrapped = Probabilities(net).eval()
    prep = {k: (list(v) if isinstance(v, tuple) else v) for k, v in data_cfg.items()}
    extra = {"tasks.json": json.dumps(tasks), "preprocessing.json": json.dumps(prep)}
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


def task_bundle_zip(run_path: Path, task: str) -> Path:
    """Zip one task's bundle folder (bundle-<task>/) into <run>/<run_id>-<task>-model.zip (a temp name, renamed)."""
    import zipfile
    run_path = Path(run_path)
    folder = run_path / f"bundle-{task}"
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"Run {run_path.name} has no bundle for task '{task}'.")
    out = run_path / f"{run_path.name}-{task}-model.zip"
    tmp = out.with_suffix(".zip.partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"{run_path.name}-{task}/{f.name}")
    tmp.replace(out)
    return out
