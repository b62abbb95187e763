"""ONNX exports of a bundle: float32 (timm's own exporter) and int8 (ONNX Runtime's quantization tools).

Both files take what the bundle's timm transform produces (float32 NCHW, normalised, input `input0` with a
dynamic batch axis, timm's naming) and return calibrated class probabilities (`output0` = softmax(logits / T)),
so an app without PyTorch needs no code of ours: the class names and the preprocessing are in the file's
metadata. Whether an export predicts what the run does is checked in core/export/parity.py, not here.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.models.freeze import PooledAndLogits

INPUT, OUTPUT = "input0", "output0"  # timm.utils.onnx.onnx_export's names
UNKNOWN_SCORE, UNKNOWN = "unknown_score", "unknown"  # the extra outputs when the bundle has an unknown-input scorer
QUANT_OPS = ["Conv", "MatMul", "Gemm"]  # the softmax and the pooling stay float


class Probabilities(nn.Module):
    """The classifier with its calibration temperature and softmax: what every export hands out."""

    def __init__(self, model: nn.Module, temperature: float = 1.0):
        super().__init__()
        self.model, self.temperature = model, float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.model(x) / self.temperature).softmax(-1)


class ProbabilitiesAndUnknown(nn.Module):
    """Probabilities, plus the unknown-input score and its decision (core/analysis/unknown.py) from the same pass."""

    def __init__(self, model: nn.Module, temperature: float, unknown: nn.Module):
        super().__init__()
        self.both, self.temperature, self.unknown = PooledAndLogits(model), float(temperature), unknown

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, pooled = self.both(x)
        return ((logits / self.temperature).softmax(-1), *self.unknown(logits, pooled))


def export_metadata(classes: list[str], data_cfg: dict, temperature: float) -> dict[str, str]:
    """What a user of the bare file needs besides the weights, as string key/values (ONNX metadata_props and
    TorchScript extra files take strings)."""
    prep = {k: (list(v) if isinstance(v, tuple) else v) for k, v in data_cfg.items()}
    return {"label_names": json.dumps(list(classes)), "preprocessing": json.dumps(prep),
            "temperature": f"{temperature:.6g}", "input": "float32 NCHW as timm.data.create_transform(**preprocessing)"
            " produces it", "output": "class probabilities, softmax(logits / temperature)"}


def export_onnx(model: nn.Module, classes: list[str], data_cfg: dict, temperature: float, dest: Path,
                unknown: nn.Module | None = None) -> Path:
    """Export with timm's exporter (TorchScript-based, the one measured fast here; the checker runs on the file)
    and write the metadata into the graph. With `unknown` (the bundle's scorer) the file has two more outputs:
    `unknown_score` (float, higher = more unlike the training images) and `unknown` (bool, over the threshold).
    `dest` appears only when complete."""
    import onnx
    from timm.utils.onnx import onnx_export
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    wrapped = (Probabilities(model, temperature) if unknown is None else
               ProbabilitiesAndUnknown(model, temperature, unknown)).eval()
    names = [OUTPUT] if unknown is None else [OUTPUT, UNKNOWN_SCORE, UNKNOWN]
    example = torch.zeros(1, *data_cfg["input_size"])
    with warnings.catch_warnings():  # the legacy exporter is deprecated upstream; timm still uses it by default
        warnings.simplefilter("ignore")
        onnx_export(wrapped, str(tmp), example_input=example, input_names=[INPUT], output_names=names)
    graph = onnx.load(str(tmp))
    for out in graph.graph.output[1:]:  # timm names the batch axis of the first output only
        out.type.tensor_type.shape.dim[0].dim_param = "batch"
    meta = export_metadata(classes, data_cfg, temperature)
    if unknown is not None:
        meta["unknown"] = json.dumps({**unknown.describe(), "outputs": [UNKNOWN_SCORE, UNKNOWN],
                                      "meaning": "unknown = unknown_score > threshold: the image looks unlike the "
                                                 "training images (the threshold accepts 95% of validation images)"})
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(tmp))
    tmp.replace(dest)
    return dest


def quantize_int8(fp32: Path, dest: Path, calibration: Iterator[np.ndarray] | None) -> str:
    """int8 weights and activations with ONNX Runtime; returns the method used.

    Static (QDQ, per-channel, min-max ranges from `calibration` batches of training images) for graphs with
    convolutions: dynamic quantization would leave their activations float. reduce_range (7-bit weights) because
    x86 CPUs without VNNI saturate in int8 products: on ants/bees it cost 3.3 points of accuracy without it, 0.65
    with it (and with every training image as calibration). Dynamic when there is nothing to calibrate on, or no
    convolution (transformers: MatMul weights only)."""
    import onnx
    from onnxruntime import quantization as oq
    dest = Path(dest)
    pre = dest.with_name(dest.stem + ".pre.onnx")
    tmp = dest.with_name(dest.name + ".partial")
    try:
        # shape inference and fusions: what the quantizer expects. ONNX Runtime's symbolic shape inference fails
        # on the unknown-input outputs' graph (an Expand its optimizer makes of them); ONNX's own inference suffices
        scored = len(onnx.load(str(fp32), load_external_data=False).graph.output) > 1
        oq.quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=scored)
        has_conv = any(n.op_type == "Conv" for n in onnx.load(str(pre)).graph.node)
        if calibration is not None and has_conv:
            class Reader(oq.CalibrationDataReader):
                def get_next(self) -> dict | None:
                    batch = next(calibration, None)
                    return None if batch is None else {INPUT: batch}
            oq.quantize_static(str(pre), str(tmp), Reader(), quant_format=oq.QuantFormat.QDQ, per_channel=True,
                               reduce_range=True, activation_type=oq.QuantType.QUInt8,
                               weight_type=oq.QuantType.QInt8, calibrate_method=oq.CalibrationMethod.MinMax,
                               op_types_to_quantize=QUANT_OPS)
            method = "static"
        else:
            oq.quantize_dynamic(str(pre), str(tmp), weight_type=oq.QuantType.QInt8,
                                op_types_to_quantize=["MatMul", "Gemm"])
            method = "dynamic"
        _copy_metadata(fp32, tmp)
        tmp.replace(dest)
    finally:
        pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return method


def _copy_metadata(src: Path, dst: Path) -> None:
    import onnx
    source, target = onnx.load(str(src)), onnx.load(str(dst))
    have = {p.key for p in target.metadata_props}
    for p in source.metadata_props:
        if p.key not in have:
            target.metadata_props.add(key=p.key, value=p.value)
    onnx.save(target, str(dst))


def cpu_session(path: Path, threads: int = 0):
    """An ONNX Runtime session on the CPU provider, its warnings silenced (threads 0: ONNX Runtime's default)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """An ONNX file on ONNX Runtime's CPU provider: float32 NCHW batch in, probabilities out."""

    def __init__(self, path: Path, threads: int = 0):
        self.session = cpu_session(path, threads)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0]

    @property
    def has_unknown(self) -> bool:
        """Whether the file was exported with the unknown-input scorer."""
        return UNKNOWN in {o.name for o in self.session.get_outputs()}

    def with_unknown(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities, unknown_score, unknown) in one pass of a file exported with the scorer."""
        probs, score, flag = self.session.run([OUTPUT, UNKNOWN_SCORE, UNKNOWN],
                                              {INPUT: np.ascontiguousarray(x, dtype=np.float32)})
        return probs, score, flag.astype(bool)


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata an ONNX export carries (class names, preprocessing, temperature)."""
    import onnx
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
