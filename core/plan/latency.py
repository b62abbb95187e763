"""CPU latency of the catalogue's backbones on this machine: what a prediction costs where the model will run.

Each backbone (random weights: the time does not depend on them; a two-class head; its own input size) is
exported to ONNX and timed in ONNX Runtime on the CPU, batch 1, one thread, the backbones in alternation
(core/export/parity.latency_ms: this VM's speed drifts within a minute, so back-to-back blocks would compare
different machines). The result is kept in the machine's cache (core/files/cache.py) with the processor and the
ONNX Runtime version it was measured with, so the catalogue shows it at once; `python -m core backbones --measure`
measures again.
"""

from __future__ import annotations

import functools
import json
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.config import TrainConfig
from core.files.atomic import atomic_write_json
from core.files.cache import cache_root, locked
from core.models.backbones import CATALOGUE, OFFLINE

REPEATS = 15


def _cache_file() -> Path:
    return cache_root() / "latency.json"


@functools.cache
def machine_id() -> str:
    """The CPU model and ONNX Runtime version: what a measurement holds for (read once per process; the Model
    page asks on every rerun)."""
    import onnxruntime as ort
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} | onnxruntime {ort.__version__}"


def cached_latency() -> dict[str, float]:
    """backbone -> ms per image measured earlier on this machine (empty when never measured here)."""
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data.get("ms", {}) if data.get("machine") == machine_id() else {}


def measure_latency(backbones: tuple[str, ...] = OFFLINE, progress: Callable[[str, int, int], None] | None = None,
                    repeats: int = REPEATS) -> dict[str, float]:
    """Median ms per image (batch 1, one thread, ONNX Runtime CPU) of each backbone; saved in the cache."""
    import onnxruntime as ort

    from core.export.onnx import export_onnx
    from core.export.parity import latency_ms
    from core.models.backbones import create_model, data_config
    runners, names = [], []
    with tempfile.TemporaryDirectory(prefix="transferlab-latency-") as tmp:
        for k, name in enumerate(backbones):
            if progress:
                progress(f"exporting {name}", k, len(backbones))
            model = create_model(TrainConfig(backbone=name, weights="random"), 2).eval()  # time needs no weights
            dcfg = data_config(model)
            path = export_onnx(model, ["a", "b"], dcfg, 1.0, Path(tmp) / f"{name}.onnx")
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: np.zeros((1, *dcfg["input_size"]), dtype=np.float32)}
            runners.append(lambda _, s=session, f=feed: s.run(None, f))
            names.append(name)
        if progress:
            progress("timing (batch 1, alternating)", len(backbones), len(backbones))
        times = latency_ms(runners, np.zeros(1), repeats=repeats)
    result = {n: round(t, 2) for n, t in zip(names, times, strict=True)}
    with locked(_cache_file()):
        atomic_write_json(_cache_file(), {"machine": machine_id(), "ms": {**cached_latency(), **result}})
    return result


def catalogue_rows() -> list[dict]:
    """The catalogue as a table: name, parameters, input size, offline or not, CPU latency where measured here."""
    ms = cached_latency()
    return [{"backbone": b.name, "params (M)": b.params_m, "input (px)": b.input_size,
             "offline": "bundled" in b.weight_sources, "CPU ms/image": ms.get(b.name), "notes": b.note}
            for b in CATALOGUE]
