"""Does watching slow training? The same training with 0 and with N sessions polling its Train page.

Each watcher is a Streamlit AppTest session of the real app attached to the running job; every second each
one re-runs the Train page (snapshot, four plotly charts, serialisation), the work a browser tab's
`run_every=1.0` fragment causes on the server. WebSocket delivery is not included. Reported: median epoch
time with and without watchers, and the ratio.

    python -m bench.polling --watchers 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(watchers: int, epochs: int) -> list[float]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from core.runs import RunDir
    from pages._ui import SAMPLE_DATA
    st.cache_resource.clear()
    owner = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    cfg = dict(owner.session_state["cfg"])
    cfg.update(data=str(SAMPLE_DATA), freeze="full", epochs=epochs, early_stopping=0)
    owner.session_state["cfg"] = cfg
    owner.switch_page("pages/train.py").run()
    owner.button(key="start").click().run()
    run_id = owner.session_state["run_id"]
    sessions = []
    for _ in range(watchers):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
        at.session_state["run_id"] = run_id
        at.switch_page("pages/train.py").run()
        sessions.append(at)
    run = RunDir(Path(cfg["output_dir"]) / run_id)
    polls = 0
    while run.read_status().get("status") in ("queued", "running"):
        t0 = time.perf_counter()
        for at in sessions:  # one pass = every watcher's fragment firing once
            at.run()
            polls += 1
        time.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))
    rows = run.read_metrics()
    print(f"  watchers={watchers}: {len(rows)} epochs, {polls} page runs, epoch seconds "
          f"{[round(r['seconds'], 2) for r in rows]}", flush=True)
    return [r["seconds"] for r in rows[1:]]  # the first epoch includes warm-up


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--watchers", type=int, default=10)
    p.add_argument("--epochs", type=int, default=6)
    args = p.parse_args()
    os.environ.setdefault("TRANSFERLAB_WORKSPACE", tempfile.mkdtemp(prefix="bench-poll-"))
    quiet = run_once(0, args.epochs)
    busy = run_once(args.watchers, args.epochs)
    q, b = statistics.median(quiet), statistics.median(busy)
    print(f"\n| sessions polling | median epoch s |\n|---|---|\n| 0 | {q:.2f} |\n| {args.watchers} | {b:.2f} |")
    print(f"\nslowdown with {args.watchers} watchers: {b / q:.3f}x (target < 1.10x)")


if __name__ == "__main__":
    main()
