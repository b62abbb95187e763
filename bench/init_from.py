"""Starting from a finished run vs starting from ImageNet, on images the source never saw: first-epoch and final
validation accuracy on the same validation images.

    python -m bench.init_from            # ants/bees halves and a 4-class blood-cell subset of ../shared/datasets

- ants/bees: the training images of each class split in two halves by file name (alternating); the source run
  fine-tunes (partial, 3 epochs) on half A; half B is then trained from the source and from ImageNet (partial and
  probe, 2 epochs each). The validation folder is the same for all.
- blood cells: four classes of pbc_blood; the source is a probe on the first 100 training images of each class,
  the target the other 50 of each (probe, 3 epochs), from the source and from ImageNet; both are validated on
  pbc_blood's validation images of those classes.
The subsets are hard links in a temporary folder. Accuracy, not time, is the result.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from core.config import TrainConfig
from core.engine.train import train
from core.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"


def link(files: list[Path], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        os.link(f, dest / f.name)


def images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def run(label: str, out: Path, **kw) -> str:
    result = train(TrainConfig(**{"output_dir": str(out), "early_stopping": 0, **kw}))
    accs = [m["val_acc"] for m in RunDir(Path(result.run_dir)).read_metrics()]
    print(json.dumps({"run": label, "first_epoch": round(accs[0], 4), "final": result.summary.val_accuracy}),
          flush=True)
    return result.run_dir


def ants_bees(tmp: Path) -> None:
    src = DATASETS / "hymenoptera"
    for c in ("ants", "bees"):
        files = images(src / "train" / c)
        link(files[0::2], tmp / "A" / "train" / c)
        link(files[1::2], tmp / "B" / "train" / c)
        for half in ("A", "B"):
            link(images(src / "val" / c), tmp / half / "val" / c)
    source = run("ants/bees source: partial on half A", tmp / "runs", data=str(tmp / "A"), freeze="partial", epochs=3)
    for freeze in ("partial", "probe"):
        run(f"half B from the source ({freeze})", tmp / "runs", data=str(tmp / "B"), init_from=source, freeze=freeze,
            epochs=2)
        run(f"half B from ImageNet ({freeze})", tmp / "runs", data=str(tmp / "B"), freeze=freeze, epochs=2)


def blood_cells(tmp: Path) -> None:
    src = DATASETS / "pbc_blood"
    classes = sorted(p.name for p in (src / "train").iterdir() if p.is_dir())[:4]
    for c in classes:
        files = images(src / "train" / c)
        link(files[:100], tmp / "P" / "train" / c)
        link(files[100:], tmp / "Q" / "train" / c)
        for part in ("P", "Q"):
            link(images(src / "val" / c), tmp / part / "val" / c)
    source = run("blood cells source: probe, 100 per class", tmp / "runs", data=str(tmp / "P"), freeze="probe",
                 epochs=5)
    run("50 others per class from the source (probe)", tmp / "runs", data=str(tmp / "Q"), init_from=source,
        freeze="probe", epochs=3)
    run("50 others per class from ImageNet (probe)", tmp / "runs", data=str(tmp / "Q"), freeze="probe", epochs=3)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-init-from-") as tmp:
        ants_bees(Path(tmp) / "ants_bees")
        blood_cells(Path(tmp) / "blood")


if __name__ == "__main__":
    main()
