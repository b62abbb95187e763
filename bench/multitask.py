"""Two tasks on one backbone vs each task alone, on ants/bees with a second labelling of the same photos.

    python -m bench.multitask [--freeze probe|partial] [--epochs 4] [--form labels|datasets|both]
                              [--task-weights species=1,light=0.5 ...]

The second task, `light`, is bright vs dark: the mean luminance of each photo's centre crop against the median of
all photos. The labels file and class-folder copies for the single-task runs are written to a temporary folder.
The two tasks are given as a labels file over the photos (--form labels), or as two class-folder datasets,
hymenoptera and the `light` copy, matched by content (--form datasets); both forms hold the same labels and split.
Validation accuracy per task (153 images: one image is 0.65 points).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from core.config import TrainConfig
from core.engine.train import train

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hymenoptera"


def write_labels(tmp: Path) -> tuple[Path, Path]:
    """labels.csv (path, species, light) over DATA, and a class-folder copy (hard links) labelled by light."""
    rows = []
    for p in sorted(DATA.rglob("*")):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
            with Image.open(p) as im:
                img = ImageOps.exif_transpose(im).convert("L")
            w, h = img.size
            s = min(w, h)
            crop = img.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2))
            rows.append((p.relative_to(DATA), float(np.asarray(crop).mean())))
    median = np.median([lum for _, lum in rows])
    lines = ["path,species,light"]
    for rel, lum in rows:
        light = "bright" if lum > median else "dark"
        lines.append(f"{rel.as_posix()},{rel.parts[1]},{light}")
        dest = tmp / "light" / rel.parts[0] / light / rel.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(DATA / rel, dest)
    (tmp / "labels.csv").write_text("\n".join(lines) + "\n")
    return tmp / "labels.csv", tmp / "light"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--freeze", default="probe", choices=("probe", "partial"))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--form", default="labels", choices=("labels", "datasets", "both"),
                    help="how the two tasks are given: a labels file, two class-folder datasets, or both")
    ap.add_argument("--task-weights", nargs="*", default=[],
                    help="also train the two tasks (labels file) with each of these loss weightings")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-multitask-") as tmp:
        labels, light = write_labels(Path(tmp))
        base = TrainConfig(freeze=args.freeze, epochs=args.epochs, augmentation="none", output_dir=str(Path(tmp) /
                                                                                                       "runs"))
        species_alone = train(base.replace(data=str(DATA))).summary.val_accuracy
        light_alone = train(base.replace(data=str(light))).summary.val_accuracy
        forms = {"labels": base.replace(data=str(DATA), tasks=str(labels)),
                 "datasets": base.replace(tasks=f"species={DATA},light={light}")}
        out = {"freeze": args.freeze, "epochs": args.epochs,
               **{task: {"alone": alone} for task, alone in (("species", species_alone), ("light", light_alone))}}
        for form in (("labels", "datasets") if args.form == "both" else (args.form,)):
            both = train(forms[form]).summary.tasks
            key = "two tasks" if args.form != "both" else f"two tasks ({form})"
            for task in ("species", "light"):
                out[task][key] = both[task]["val"]["accuracy"]
        for weights in args.task_weights:
            both = train(forms["labels"].replace(task_weights=weights)).summary.tasks
            for task in ("species", "light"):
                out[task][f"two tasks ({weights})"] = both[task]["val"]["accuracy"]
        print(json.dumps(out))


if __name__ == "__main__":
    main()
