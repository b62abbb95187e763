"""`freeze: auto` against the experts and the engine's fixed regimes, on an honest split of every dev set.

    python -m bench.auto [SET ...] [--rows R1 R2 probe partial full auto] [--out FILE]
    python -m bench.auto --table FILE [FILE ...]        # the table again from saved rows

Rows: R1 and R2 (the experts' recipes, bench/experts.py), the engine's `probe` (the advisor's probe settings),
`partial` and `full` (the engine's defaults) and `auto` (core/workflows/auto.py: a probe, then fine-tuning from its
head, the better on validation delivered). Columns: test accuracy (the half of each dev set's val/ that no
decision saw), validation accuracy (the other half: early stopping and auto's choice see it), wall time of the
whole row with an empty feature cache, and time / R2 measured in the same process. Times on a shared machine are
only comparable as ratios within one run. Each row is appended to --out as a JSON line as soon as it finishes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.experts import DEV_SETS, cold_cache, honest_split, r1_probe, r2_finetune

ROWS = ("R1", "R2", "probe", "partial", "full", "auto")


def engine_row(row: str, data: Path, out_dir: str, img_size: int = 0) -> dict:
    from core.config import TrainConfig
    from core.engine.train import train
    from core.plan.advisor import PROBE_EPOCHS, PROBE_LR
    from core.workflows.auto import resolve_auto, train_resolved
    cfg = TrainConfig(data=str(data), output_dir=out_dir, freeze=row, img_size=img_size)
    t0 = time.perf_counter()
    extra = {}
    if row == "probe":
        result = train(cfg.replace(epochs=PROBE_EPOCHS, lr=PROBE_LR))
    elif row == "auto":
        resolved = resolve_auto(cfg)
        t1 = time.perf_counter()
        result = train_resolved(resolved)
        est = resolved.estimate
        extra = {"advise_seconds": t1 - t0, "train_seconds": time.perf_counter() - t1,
                 "estimate_seconds": est.total_seconds if est else None,
                 "estimate_range": [est.low_seconds, est.high_seconds] if est else None}
    else:
        result = train(cfg)
    s = result.summary
    return {"row": row, "val_acc": s.val.accuracy, "test_acc": s.test.accuracy, "seconds": time.perf_counter() - t0,
            "epochs_run": s.epochs_run, "best_epoch": s.best_epoch, "freeze": s.freeze, "notes": s.notes,
            "img_size": img_size, **extra}


def run_row(row: str, data: Path, r2_epochs: int, img_size: int = 0) -> dict:
    with cold_cache(), tempfile.TemporaryDirectory(prefix="bench-auto-") as tmp:
        if row == "R1":
            return r1_probe(data)
        if row == "R2":
            return r2_finetune(data, epochs=r2_epochs, log=lambda m: print(m, file=sys.stderr, flush=True))
        return engine_row(row, data, tmp, img_size)


def table(rows: list[dict]) -> str:
    """The rows by dataset (in the order first seen) and in ROWS order; a row measured again replaces the earlier."""
    sets = list(dict.fromkeys(r["set"] for r in rows))
    rows = sorted({(r["set"], r["row"], r.get("img_size", 0)): r for r in rows}.values(),
                  key=lambda r: (sets.index(r["set"]), ROWS.index(r["row"])))
    lines = ["| dataset | row | test acc | val acc | time (s) | time / R2 |", "|---|---|---|---|---|---|"]
    r2 = {r["set"]: r["seconds"] for r in rows if r["row"] == "R2"}
    for r in rows:
        ratio = f"{r['seconds'] / r2[r['set']]:.2f}x" if r["set"] in r2 else "-"
        extra = f" ({r['freeze']}, best epoch {r['best_epoch']} of {r['epochs_run']})" if r["row"] == "auto" else ""
        extra += f" at {r['img_size']} px" if r.get("img_size") else ""
        lines.append(f"| {r['set']} | {r['row']}{extra} | {r['test_acc']:.1%} | {r['val_acc']:.1%} | "
                     f"{r['seconds']:.0f} | {ratio} |")
    est = [r for r in rows if r.get("estimate_seconds")]
    if est:  # the advisor's estimate against the auto row's measured training time (after planning)
        lines += ["", "| dataset | estimate (s) | range (s) | measured (s) | estimate / measured | epochs run |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['set']} | {r['estimate_seconds']:.0f} | {r['estimate_range'][0]:.0f}-"
                  f"{r['estimate_range'][1]:.0f} | {r['train_seconds']:.0f} | "
                  f"{r['estimate_seconds'] / r['train_seconds']:.2f} | {r['epochs_run']} |" for r in est]
    return "\n".join(lines)


def main(default_rows: tuple[str, ...] = ROWS, prog: str = "python -m bench.auto") -> None:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="*", default=list(DEV_SETS), help="dev sets (folder names in ../shared/datasets)")
    ap.add_argument("--rows", nargs="+", choices=ROWS, default=list(default_rows))
    ap.add_argument("--img-size", type=int, default=0, help="input size of the engine's rows (0: the backbone's own)")
    ap.add_argument("--r2-epochs", type=int, default=5, help="R2's epochs (the recipe: 5; fewer to develop)")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "bench-auto.jsonl")
    ap.add_argument("--table", type=Path, nargs="+", help="print the table of saved rows and exit")
    args = ap.parse_args()
    if args.table:
        print(table([json.loads(line) for f in args.table for line in f.read_text().splitlines() if line.strip()]))
        return
    done = []
    for name in args.sets:
        data = honest_split(name)
        for row in args.rows:
            r = {"set": name, **run_row(row, data, args.r2_epochs, args.img_size)}
            done.append(r)
            with args.out.open("a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"{name} {row}: test {r['test_acc']:.1%} val {r['val_acc']:.1%} {r['seconds']:.0f} s",
                  file=sys.stderr, flush=True)
    print(table(done))


if __name__ == "__main__":
    main()
