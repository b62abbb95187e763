"""The model card: the bundle's README.md, a Hugging Face model card (YAML metadata + Markdown) that says what the
model is, how well it does and on what, what it is for and where it will fail, how to load each export, and how to
reproduce it. Rendered from the run summary, the run record (core/export/record.py) and the export checks; without
a record (at write_bundle time, or runs made before records) the sections that need it are left out.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from core.config import TrainConfig
from core.export.parity import ExportCheck
from core.runs import RunSummary

FEW_IMAGES_PER_CLASS = 50  # below this a class is "few images" in the limitations (Teachable Machine users' rule)
IMBALANCE_RATIO = 3.0

LOAD_TIMM = """import timm, torch
from PIL import Image, ImageOps

model = timm.create_model("local-dir:{folder}", pretrained=True).eval(){comment}
transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
img = ImageOps.exif_transpose(Image.open("photo.jpg")).convert("RGB")
with torch.inference_mode():  # {temperature}: the bundle's calibration temperature (config.json), as Predict uses it
    probs = (model(transform(img).unsqueeze(0)) / {temperature}).softmax(-1)[0]
labels = model.pretrained_cfg["label_names"]
print(labels[int(probs.argmax())], float(probs.max()))"""

LOAD_ONNX = """```python
import json, numpy as np, onnxruntime as ort, timm
from PIL import Image, ImageOps

session = ort.InferenceSession("model.onnx")  # or model-int8.onnx
meta = session.get_modelmeta().custom_metadata_map  # label_names, preprocessing, temperature
transform = timm.data.create_transform(**json.loads(meta["preprocessing"]))
img = ImageOps.exif_transpose(Image.open("photo.jpg")).convert("RGB")
probs = session.run(None, {"input0": transform(img).unsqueeze(0).numpy()})[0][0]  # calibrated probabilities
print(json.loads(meta["label_names"])[int(probs.argmax())], float(probs.max()))
```"""


def render_card(cfg: TrainConfig, classes: list[str], summary: RunSummary, record: dict | None = None,
                checks: dict[str, ExportCheck] | None = None) -> str:
    """The whole card as Markdown. `cfg` is the portable config (it leaves the server)."""
    checks = checks or {}
    title = cfg.run_name or f"{cfg.backbone} fine-tuned on {len(classes)} classes"
    temperature = (getattr(summary, "calibration", None) or {}).get("temperature", 1.0)
    start = f"run `{cfg.init_from}` (`{cfg.backbone}`)" if cfg.init_from else f"`{cfg.backbone}`"
    parts = [_front_matter(title, cfg, summary), f"# {title}",
             f"Image classifier fine-tuned with TransferLab from {start} (freeze mode `{cfg.freeze}`) on "
             f"`{summary.dataset or cfg.data}`. Classes: {', '.join(classes)}.",
             _lineage(summary), _metrics(summary), _calibration(summary), _exports(checks),
             _use_and_limits(classes, summary, record),
             _data(record), _training(cfg, summary, record), _provenance(record), _environment(record),
             "## Load and predict\n```python\n" + load_snippet("path/to/this/folder", temperature) + "\n```" + _tta(cfg)
             + ("\n\nThe ONNX file (no PyTorch needed):\n" + LOAD_ONNX if any("onnx" in f for f in checks) else "")
             + f"\n\nReplay the training: `python -m core train --config config.yaml --data path/to/"
               f"{summary.dataset or cfg.data}`."]
    return "\n\n".join(p for p in parts if p) + "\n"


def load_snippet(folder: str, temperature: float, comment: str = "") -> str:
    """Python that loads the bundle in `folder` with timm and prints what Predict shows for photo.jpg: the
    probabilities at the calibration temperature the bundle ships."""
    return LOAD_TIMM.format(folder=folder, temperature=f"{temperature:.6g}", comment=comment and f"  # {comment}")


def _tta(cfg: TrainConfig) -> str:
    if cfg.tta != "flip":
        return ""
    return ("\n\nTest-time augmentation (`tta: flip`): the metrics above average the probabilities of each image and "
            "its mirror image, and so does TransferLab's `predict`. The snippets here, and the ONNX and TorchScript "
            "files, predict from one view; for the same figures average `softmax(model(x))` and "
            "`softmax(model(x.flip(-1)))`, then apply the temperature to the log of the mean.")


def _front_matter(title: str, cfg: TrainConfig, summary: RunSummary) -> str:
    metrics = [{"type": "accuracy", "name": f"{name} accuracy", "value": round(r.accuracy, 4)}
               for name, r in (("validation", summary.val), ("test", summary.test)) if r is not None]
    meta: dict[str, Any] = {"library_name": "timm", "pipeline_tag": "image-classification",
                            "tags": ["image-classification", "timm", "transferlab"],
                            "base_model": f"timm/{cfg.backbone}" if cfg.weights == "hub" else None}
    if metrics:
        meta["model-index"] = [{"name": title, "results": [{
            "task": {"type": "image-classification"},
            "dataset": {"name": summary.dataset or cfg.data, "type": "imagefolder"}, "metrics": metrics}]}]
    meta = {k: v for k, v in meta.items() if v is not None}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---"


def _lineage(s: RunSummary) -> str:
    """The chain of weights that led to this model (ImageNet -> run A on X -> this run)."""
    steps = getattr(s, "lineage", None) or []
    if len(steps) < 2:
        return ""
    return "## Lineage\n\n" + " -> ".join(steps[:-1]) + f" -> **this model** ({steps[-1]})"


def _metrics(s: RunSummary) -> str:
    if s.val is None:
        return f"No results: {s.note}" if s.note else ""
    rows = [("accuracy", "accuracy"), ("balanced accuracy (mean per-class recall)", "balanced_accuracy"),
            ("macro F1", "macro_f1"), ("macro precision", "macro_precision")]
    cell = lambda r, k: "-" if r is None else f"{getattr(r, k):.4f}"  # noqa: E731
    lines = ["## Metrics", "", "| metric | validation | test |", "|---|---|---|"]
    lines += [f"| {label} | {cell(s.val, key)} | {cell(s.test, key)} |" for label, key in rows]
    lines.append(f"| images | {s.val.num} | {s.test.num if s.test else '-'} |")
    lines += ["", "| class (validation) | precision | recall | F1 | images |", "|---|---|---|---|---|"]
    lines += [f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
              for c, m in s.val.per_class.items()]
    return "\n".join(lines)


def _calibration(s: RunSummary) -> str:
    c = getattr(s, "calibration", None)
    if not c:
        return ""
    text = (f"## Calibration\n\nTemperature scaling fitted on {c.get('num', '?')} validation images: T = "
            f"{c['temperature']:.3f}; expected calibration error {c['ece_before']:.4f} -> {c['ece_after']:.4f}. "
            f"Every export applies it: probabilities are softmax(logits / T).")
    return text + (f" Note: {c['warning']}" if c.get("warning") else "")


def _exports(checks: dict[str, ExportCheck]) -> str:
    if not checks:
        return ""
    lines = ["## Exports, checked on the validation images", "",
             "| format | file | size | top-1 agrees with the run | largest probability difference | accuracy "
             "change | batch-1 CPU latency | check | sha256 |", "|---|---|---|---|---|---|---|---|---|"]
    for fmt, c in checks.items():
        latency = f"{c.latency_ms:.1f} ms (float32 {c.reference_latency_ms:.1f} ms)" if c.latency_ms else "-"
        lines.append(f"| {fmt}{' (' + c.method + ')' if c.method else ''} | `{c.file}` | {c.bytes / 1e6:.1f} MB"
                     f"{f' ({c.size_ratio:.1f}x smaller)' if c.size_ratio else ''} | {c.agree_with_run:.1%} of "
                     f"{c.images} | {c.max_prob_diff:.2g} | {c.accuracy_change:+.4f} | {latency} | "
                     f"{'passed' if c.passed else 'FAILED: ' + c.reason} | `{c.sha256[:16]}` |")
    lines.append("\nEvery export takes float32 NCHW input exactly as the bundle's timm transform produces it and "
                 "returns calibrated class probabilities; class names and preprocessing are in its metadata.")
    return "\n".join(lines)


def _none_of_these(s: RunSummary) -> str:
    """What the unknown-input score's threshold means, or that there is none (core/analysis/unknown.py)."""
    u = getattr(s, "unknown", None) or {}
    if "threshold" not in u:
        return ("It always answers one of these classes: it has no 'none of these', so an image of something else "
                "gets a wrong class, often with high confidence.")
    accept = u.get("accept", 0.95)
    return (f"It also scores how unlike the training images an image looks ({u['method']}"
            f"{', k = ' + str(u['k']) if u.get('k') else ''}, on the model's pooled features; higher = more "
            f"unlike): above {u['threshold']:.4g} it says \"none of these\" (the closest class is still given). "
            f"The threshold accepts {accept:.0%} of the validation images, so about {1 - accept:.0%} of images like "
            f"the training ones are flagged too, and an unknown close to a class can pass; move it with "
            f"`predict --unknown-threshold`. The ONNX export has it as the outputs `unknown_score` and `unknown`.")


def _use_and_limits(classes: list[str], s: RunSummary, record: dict | None) -> str:
    lines = ["## Intended use", "",
             f"Sorting images like those of `{s.dataset}` into {len(classes)} classes ({', '.join(classes)}). "
             + _none_of_these(s), "", "## Limitations", ""]
    lines += [f"- {text}" for text in limitations(s, record)]
    return "\n".join(lines)


def limitations(s: RunSummary, record: dict | None) -> list[str]:
    """What the data says about where this model may fail, as sentences."""
    out = []
    train = (record or {}).get("dataset", {}).get("counts", {}).get("train")
    if train:
        lo, hi = min(train, key=train.get), max(train, key=train.get)
        out.append(f"Trained on {sum(train.values())} images: {train[lo]} to {train[hi]} per class (fewest: "
                   f"{lo}).")
        few = [c for c, n in train.items() if n < FEW_IMAGES_PER_CLASS]
        if few:
            out.append(f"Few training images for {', '.join(few)} (under {FEW_IMAGES_PER_CLASS}): expect errors on "
                       f"photos unlike these (other lighting, backgrounds, cameras).")
        if train[lo] and train[hi] / train[lo] >= IMBALANCE_RATIO:
            balanced = any(n.startswith("balanced: on") for n in s.notes)
            out.append(f"Imbalanced classes ({train[hi]} vs {train[lo]}): " + (
                "trained class-balanced (see Training), still check the per-class recall of the small classes."
                if balanced else f"it leans towards {hi} when unsure."))
    elif s.num_train:
        out.append(f"Trained on {s.num_train} images.")
    if s.val is not None and s.val.num:
        half = 1.96 * math.sqrt(max(s.val.accuracy * (1 - s.val.accuracy), 1e-12) / s.val.num)
        out.append(f"Validation accuracy {s.val.accuracy:.3f} on {s.val.num} images: about +/- {half:.3f} (95% "
                   f"interval); one image is {1 / s.val.num:.3f}.")
    if s.test is None:
        out.append("No separate test split: the validation images also chose the best epoch (and the calibration "
                   "temperature), so the validation accuracy is slightly optimistic. A test/ folder gives an "
                   "untouched estimate.")
    leak = getattr(s, "leakage", None) or {}
    if leak.get("leaked_val"):
        out.append(f"{leak['leaked_val']} validation image(s) have a duplicate in the training images: the "
                   f"validation accuracy overstates how it does on new images.")
    if s.skipped:
        out.append(f"{len(s.skipped)} file(s) of the dataset could not be read and were left out.")
    return out


def _data(record: dict | None) -> str:
    if not record:
        return ""
    d, split = record["dataset"], record["split"]
    splits = list(d["counts"])
    lines = ["## Training data", "", f"Dataset `{d['name']}`, content hash (sha256 over every file's split, class, "
             f"path and blake2b hash) `{d['content_hash']}`. Split: {split['how']}"
             + (f" ({split['val_fraction']:.0%} validation, seed {split['seed']})." if split.get("val_fraction")
                else "."), "", "| class | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    lines += [f"| {c} | " + " | ".join(str(d["counts"][sp].get(c, 0)) for sp in splits) + " |" for c in d["classes"]]
    lines.append("\nEvery file with its hash, per split: `record.json` in this folder.")
    return "\n".join(lines)


def _training(cfg: TrainConfig, s: RunSummary, record: dict | None) -> str:
    t = (record or {}).get("training", {})
    head = (f"## Training\n\n{s.epochs_run} epochs (best: {s.best_epoch}) in {s.train_seconds:.1f} s on "
            f"`{s.device or '?'}`, batch {s.batch_size}, seed {cfg.seed}.")
    notes = "".join(f"\n- {n}" for n in t.get("notes", s.notes))
    return head + notes + "\n\nEvery configuration value (`config.yaml`):\n\n```yaml\n" + cfg.to_yaml() + "```"


def _provenance(record: dict | None) -> str:
    if not record or not record.get("provenance"):
        return ""
    rows = [f"{i}. {p['step']}: {p['source']}" + (f", `{p['file']}`" if p.get("file") else "")
            + (f" (blake2b `{p['hash']}`)" if p.get("hash") else "") + (f"; {p['note']}" if p.get("note") else "")
            for i, p in enumerate(record["provenance"], 1)]
    return "## Provenance of the weights\n\n" + "\n".join(rows)


def _environment(record: dict | None) -> str:
    if not record:
        return ""
    e = record["environment"]
    libs = ", ".join(f"{k} {v}" for k, v in e["libraries"].items())
    return (f"## Environment\n\nPython {e['python']} on {e['os']}; {libs}; TransferLab code version "
            f"`{e['code_version']}`; device `{record.get('device', '?')}`.")
