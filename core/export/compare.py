"""The side-by-side table of a distillation: teacher(s), the distilled student, and the same student trained on the
labels alone with the same settings (without that row nobody can tell whether distilling helped).

Each row is a finished model bundle: its validation accuracy (from its summary), parameters (of the network as
exported, head included), bundle size (the weights file) and CPU latency per image: the bundle exported to ONNX
(core/export/onnx.py) and run on ONNX Runtime with batch 1 and one thread, the models measured in alternation so
the machine's drifting speed does not favour one of them (core/export/parity.latency_ms). The table is written
as JSON and Markdown into the distilled run's folder (distill/table.json, distill/table.md).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.export.bundle import load_bundle
from core.export.onnx import OnnxRunner, export_onnx
from core.export.parity import latency_ms
from core.files.atomic import atomic_write_json, atomic_write_text
from core.runs import RunDir, RunSummary

LATENCY_REPEATS = 30


@dataclass(frozen=True)
class Row:
    role: str  # "teacher", "student (distilled)", "student (labels only)"
    name: str  # run id or bundle name
    backbone: str
    freeze: str
    val_accuracy: float | None
    params: int
    bundle_mb: float
    latency_ms: float  # ONNX Runtime, CPU, batch 1, one thread: median


def table_dir(run: RunDir) -> Path:
    return run.path / "distill"


def bundle_and_summary(source: str | Path) -> tuple[Path, RunSummary | None, str]:
    """A row's bundle (a run folder's bundle/, or a bundle folder or zip), its summary and a name for it."""
    p = Path(source)
    if (p / "bundle" / "config.json").is_file():
        return p / "bundle", RunDir(p).read_summary(), p.name
    summary = RunDir(p).read_summary() if p.is_dir() else None
    return p, summary, p.stem if p.is_file() else p.name


def build_table(rows_in: list[tuple[str, str | Path]], progress: Callable[[str, int, int], None] | None = None,
                repeats: int = LATENCY_REPEATS) -> list[Row]:
    """rows_in: (role, run folder or bundle) pairs, in table order."""
    loaded, runners, meta = [], [], []
    with tempfile.TemporaryDirectory(prefix="transferlab-compare-") as tmp:
        for k, (role, source) in enumerate(rows_in):
            if progress:
                progress("exporting to ONNX for the latency", k, len(rows_in))
            bundle, summary, name = bundle_and_summary(source)
            m = load_bundle(bundle)
            onnx = export_onnx(m.model, m.classes, m.data_cfg, m.temperature, Path(tmp) / f"{k}.onnx")
            x = np.zeros((1, *m.data_cfg["input_size"]), dtype=np.float32)
            runner = OnnxRunner(onnx, threads=1)
            runners.append(lambda _, r=runner, x=x: r(x))
            weights = bundle / "model.safetensors" if bundle.is_dir() else bundle
            meta.append((role, name, summary, sum(p.numel() for p in m.model.parameters()),
                         weights.stat().st_size / 1e6))
            loaded.append(m)
        if progress:
            progress("measuring CPU latency (batch 1)", 0, 1)
        times = latency_ms(runners, np.zeros(1, dtype=np.float32), repeats=repeats)
    rows = []
    for (role, name, summary, params, mb), ms in zip(meta, times, strict=True):
        rows.append(Row(role, name, summary.backbone if summary else "", summary.freeze if summary else "",
                        summary.val_accuracy if summary else None, params, round(mb, 2), round(ms, 2)))
    return rows


def to_markdown(rows: list[Row]) -> str:
    lines = ["| role | run | backbone | freeze | val accuracy | parameters | bundle MB | CPU ms/image |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = f"{r.val_accuracy:.2%}" if r.val_accuracy is not None else "-"
        lines.append(f"| {r.role} | {r.name} | {r.backbone} | {r.freeze} | {acc} | {r.params / 1e6:.2f}M | "
                     f"{r.bundle_mb:.1f} | {r.latency_ms:.1f} |")
    return "\n".join(lines) + "\n\nCPU latency: ONNX Runtime, batch 1, one thread, median of alternating runs.\n"


def write_table(run: RunDir, rows: list[Row]) -> Path:
    folder = table_dir(run)
    folder.mkdir(exist_ok=True)
    atomic_write_json(folder / "table.json", {"rows": [asdict(r) for r in rows]})
    atomic_write_text(folder / "table.md", to_markdown(rows))
    return folder / "table.md"


def read_table(run: RunDir) -> list[Row] | None:
    import json
    path = table_dir(run) / "table.json"
    if not path.is_file():
        return None
    return [Row(**r) for r in json.loads(path.read_text(encoding="utf-8"))["rows"]]
