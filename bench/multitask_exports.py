"""A two-task run's exports, checked: each task's bundle with plain timm, its calibration, and the multi-output ONNX
files (float32 and int8) against the run, on ants/bees with the `light` labelling of bench/multitask.py.

    python -m bench.multitask_exports [--freeze probe|partial] [--epochs 8]

Prints, per task: validation accuracy, how often the bundle loaded with plain timm gives the run's top-1, the
fitted temperature with the validation ECE before and after; then each multi-output ONNX file's check (top-1
agreement, largest probability difference, accuracy change per task; int8: size and batch-1 latency ratio) and
whether it passed the export bar. The latency is measured side by side in the check; read it as a ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch

from bench.multitask import DATA, write_labels
from core.analysis.predictions import load_predictions
from core.config import TrainConfig
from core.data.images import load_image
from core.engine.train import train
from core.export.multitask_onnx import export_multitask_run
from core.runs import RunDir


def bundle_agreement(view: RunDir) -> float:
    """Share of the task's validation images on which its bundle, loaded with plain timm, gives the run's top-1."""
    model = timm.create_model(f"local-dir:{view.bundle_dir}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    val = load_predictions(view.predictions).splits["val"]
    root = Path(TrainConfig.load(view.config).data)
    with torch.inference_mode():
        predicted = torch.cat([model(torch.stack([transform(load_image(root / p)) for p in val.paths[i:i + 32]]))
                               .argmax(1) for i in range(0, len(val.paths), 32)]).numpy()
    return float(np.mean(predicted == val.predicted))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--freeze", default="probe", choices=("probe", "partial"))
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-multitask-exports-") as tmp:
        labels, _ = write_labels(Path(tmp))
        result = train(TrainConfig(data=str(DATA), tasks=str(labels), freeze=args.freeze, epochs=args.epochs,
                                   augmentation="none", early_stopping=0, output_dir=str(Path(tmp) / "runs")))
        run = RunDir(Path(result.run_dir))
        for view in run.task_views():
            s = view.read_summary()
            c = s.calibration or {}
            print(json.dumps({"task": view.task, "val_accuracy": round(s.val.accuracy, 4), "images": s.val.num,
                              "bundle_same_top1": bundle_agreement(view), "temperature": c.get("temperature"),
                              "ece_before": c.get("ece_before"), "ece_after": c.get("ece_after")}), flush=True)
        for fmt in ("onnx", "onnx-int8"):
            t0 = time.perf_counter()
            check = export_multitask_run(run, fmt)
            print(json.dumps({"format": fmt, "passed": check.passed, "reason": check.reason,
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
            print("  " + check.summary_line(), flush=True)


if __name__ == "__main__":
    main()
