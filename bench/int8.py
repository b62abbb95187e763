"""int8 ONNX against float32 on the dev sets: validation accuracy lost by the int8 file that `export --format onnx-int8`
makes (its own check, core/export/parity.py), against the 1-point bar.

    python -m bench.int8                          # the six dev sets in ../shared/datasets
    python -m bench.int8 --head-float DATA ...    # also: the classifier left in float (Conv quantized only)

Each dataset gets the run `freeze: auto` delivers when a probe is enough (Lite0, bundled weights, the advisor's probe
epochs and learning rate), then its int8 export and check. Accuracy figures only; no times.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from core.config import TrainConfig
from core.engine.train import train
from core.export import onnx as onnx_export
from core.export.artifacts import export_run
from core.export.parity import INT8_MAX_ACCURACY_DROP
from core.plan.advisor import PROBE_EPOCHS, PROBE_LR
from core.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]
DEV_SETS = ("hymenoptera", "rsscn7", "pbc_blood", "magnetic_tile", "cifar10", "flowers17")


def measure(data: Path, out: Path, head_float: bool) -> dict:
    cfg = TrainConfig(data=str(data), freeze="probe", epochs=PROBE_EPOCHS, lr=PROBE_LR, output_dir=str(out))
    run = RunDir(Path(train(cfg).run_dir))
    row = {"data": data.name}
    variants = [("int8", onnx_export.QUANT_OPS)] + ([("int8, head float", ["Conv"])] if head_float else [])
    plain = onnx_export.QUANT_OPS
    for name, ops in variants:
        onnx_export.QUANT_OPS = ops
        try:
            check = export_run(run, "onnx-int8")
        finally:
            onnx_export.QUANT_OPS = plain
        row.update({"images": check.images, "fp32": check.run_accuracy, name: check.accuracy,
                    f"{name} drop": check.run_accuracy - check.accuracy, f"{name} passes": check.passed})
    return row


def table(rows: list[dict], head_float: bool) -> str:
    names = ["int8"] + (["int8, head float"] if head_float else [])
    head = "| dataset | val images | fp32 ONNX | " + " | ".join(f"{n} | {n} drop (points)" for n in names) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(names))]
    for r in rows:
        cells = [r["data"], str(r["images"]), f"{r['fp32']:.1%}"]
        for n in names:
            lost = round(r[f"{n} drop"] * r["images"])
            cells += [f"{r[n]:.1%}", f"{100 * r[f'{n} drop']:.1f} ({lost} images)"
                      + ("" if r[f"{n} drop"] <= INT8_MAX_ACCURACY_DROP + 1e-9 else " **over the bar**")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.int8", description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="*", type=Path,
                   default=[ROOT.parent / "shared" / "datasets" / d for d in DEV_SETS])
    p.add_argument("--head-float", action="store_true", help="also quantize the convolutions only")
    p.add_argument("--json", type=Path, help="write the rows here too")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        for data in args.data:
            rows.append(measure(data, Path(tmp), args.head_float))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    print(f"\nbar: at most {100 * INT8_MAX_ACCURACY_DROP:g} point of accuracy lost\n" + table(rows, args.head_float))


if __name__ == "__main__":
    main()
