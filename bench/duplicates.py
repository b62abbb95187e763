"""Near-duplicates on the dev sets: planted copies found, groups among the original images, patterns not grouped.

    python -m bench.duplicates                    # every dev set under ../shared/datasets, 25 planted sources each
    python -m bench.duplicates --sets rsscn7 --per-set 10 --show

For each dev set: (1) the groups find_duplicates reports among its own images, each listed (--show: every
member); (2) a copy of the set (hard links) whose val/ also holds four planted copies of --per-set training images
(resized, re-encoded, cropped, mirrored: bench/planted.py): how many copies are found in a group with their
source, and the pHash distance and SSIM of the hardest copy of each kind (the margins behind the thresholds in
core/data/duplicates.py). Then the generated regular patterns alone: the groups among them (should be none).
Runs in a throwaway machine cache, so nothing is reused from earlier runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bench.planted import patterns, planted_copies

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
SETS = ("hymenoptera", "rsscn7", "pbc_blood", "magnetic_tile", "cifar10", "flowers17")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sets", nargs="*", default=list(SETS))
    p.add_argument("--per-set", type=int, default=25, help="training images each dev set gets planted copies of")
    p.add_argument("--show", action="store_true", help="list every member of every group among the originals")


def pair_measures(a_path: Path, b_path: Path) -> tuple[int, float, float, float, float]:
    """(fewest pHash bits apart over as-is / mirrored / centre; then SSIM, colour difference and detail
    correlation of the variant with the best SSIM) of two image files, thresholds aside."""
    from core.data.duplicates import measures, variants
    from core.data.fingerprints import fingerprint, unpack
    hashes, thumbs = unpack(np.stack([fingerprint(a_path.read_bytes()), fingerprint(b_path.read_bytes())]))
    bits = int(min(np.bitwise_count(hashes[i, k] ^ hashes[1 - i, 0]) for k in range(3) for i in range(2)))
    best = max((measures(a, b) for a, b in variants(thumbs, np.array([[0, 1]]))), key=lambda m: m[0][0])
    return bits, *(round(float(m[0]), 3) for m in best)


def plant(src: Path, dest: Path, per_set: int) -> dict[Path, tuple[Path, str]]:
    """dest: hard links to src's train/ and val/ plus planted copies in val/; copy -> (its source, kind)."""
    from PIL import Image
    shutil.copytree(src, dest, copy_function=os.link, ignore=shutil.ignore_patterns("test", "*.md"))
    train = sorted(p for p in (dest / "train").rglob("*") if p.is_file())
    picks = [train[round(k * (len(train) - 1) / max(per_set - 1, 1))] for k in range(min(per_set, len(train)))]
    planted = {}
    for n, source in enumerate(picks):
        with Image.open(source) as img:
            for kind, copy in planted_copies(img).items():
                out = dest / "val" / source.parent.name / f"planted{n}_{kind}.jpg"
                copy.save(out, quality=95)
                planted[out] = (source, kind)
    return planted


def run(args: argparse.Namespace) -> None:
    from core.data.dataset import open_dataset
    from core.data.duplicates import find_duplicates
    work = Path(tempfile.mkdtemp(prefix="bench-dups-"))
    os.environ["TRANSFERLAB_CACHE"] = str(work / "cache")
    print("| set | images | groups among originals (exact / near) | planted copies found | hardest copy: bits, "
          "SSIM, colour diff, detail (resized / re-encoded / cropped / mirrored) |\n|---|---|---|---|---|")
    notes = []
    for name in args.sets:
        src = DATASETS / name
        report = find_duplicates(open_dataset(src))
        s = report.summary()
        for g in report.groups:
            labels = sorted({m.label for m in g.members})
            shown = [f"{m.split}/{m.path.split('/')[-1]}" for m in g.members][: None if args.show else 4]
            closest = ""
            if g.kind == "near" and len(g.members) > 1:  # the first member is not always the representative
                closest = f" (first two: {pair_measures(src / g.members[0].path, src / g.members[1].path)})"
            notes.append(f"{name}: {g.kind}, {len(g.members)} images, classes {labels}{closest}, "
                         f"{'leaks' if g.leaks else 'within one split'}: {', '.join(shown)}")
        planted = plant(src, work / name, args.per_set)
        rep = find_duplicates(open_dataset(work / name))
        together = {(m.path, n.path) for g in rep.groups for m in g.members for n in g.members}
        found = {c: (source.relative_to(work / name).as_posix(), c.relative_to(work / name).as_posix()) in together
                 for c, (source, _) in planted.items()}
        hardest = []
        for kind in ("resized", "reencoded", "cropped", "mirrored"):
            ms = [pair_measures(source, c) for c, (source, k) in planted.items() if k == kind]
            hardest.append(f"{max(m[0] for m in ms)}, {min(m[1] for m in ms):.2f}, {max(m[2] for m in ms):.0f}, "
                           f"{min(m[3] for m in ms):.2f}")
        missed = [f"{c.name} (of {planted[c][0].name}: {pair_measures(planted[c][0], c)})"
                  for c, ok in found.items() if not ok]
        notes += [f"{name}: missed {m}" for m in missed]
        print(f"| {name} | {s['num_images']} | {s['groups']} ({s['exact_groups']} / {s['near_groups']}) | "
              f"{sum(found.values())} / {len(found)} | {' / '.join(hardest)} |", flush=True)
    for key, img in patterns().items():  # class folders by kind: stripes, grids, chequerboards
        (work / "patterns" / key.split("_")[0]).mkdir(parents=True, exist_ok=True)
        img.save(work / "patterns" / key.split("_")[0] / f"{key}.png")
    rep = find_duplicates(open_dataset(work / "patterns"))
    print(f"\n{rep.num_images} generated patterns (stripes, grids, chequerboards): {len(rep.groups)} group(s)")
    print("\n".join(["", "Groups among the originals and missed copies:", *notes] if notes else []))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.duplicates", description=__doc__.splitlines()[0])
    add_arguments(parser)
    run(parser.parse_args())
