"""Does watching slow training? The same training with 0 and with N sessions watching its Train page.

A real `streamlit run` server trains (started from a real browser session). Each watcher is a real
Streamlit session over the WebSocket protocol, as a browser tab is: it opens the Train page with
`?run=<id>`, and whenever the server asks for an auto-rerun of the live fragment (`run_every`), it sends the
fragment rerun request a browser's timer sends, and reads every reply. Reported: the median epoch time
with 0 and with N watchers, and the ratio.

    python -m bench.polling --watchers 10
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Watcher(threading.Thread):
    """One Streamlit session on the Train page of a run, rerunning the live fragment when asked."""

    def __init__(self, port: int, run_id: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.port, self.run_id, self.stop = port, run_id, stop
        self.fragment_reruns = 0

    def run(self) -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
        from websockets.sync.client import connect
        with connect(f"ws://127.0.0.1:{self.port}/_stcore/stream", subprotocols=["streamlit"],
                     max_size=None) as ws:
            page_hash, due = "", {}  # fragment id -> [interval, next time]: a page may have several
            self._send(ws, BackMsg, fragment=None, page_hash="")
            while not self.stop.is_set():
                try:
                    raw = ws.recv(timeout=0.05)
                    msg = ForwardMsg()
                    msg.ParseFromString(raw)
                    kind = msg.WhichOneof("type")
                    if kind == "new_session":
                        page_hash = msg.new_session.page_script_hash or page_hash
                    elif kind == "auto_rerun" and msg.auto_rerun.fragment_id not in due:
                        interval = msg.auto_rerun.interval
                        due[msg.auto_rerun.fragment_id] = [interval, time.monotonic() + interval]
                except TimeoutError:
                    pass
                for fragment, slot in due.items():
                    if time.monotonic() >= slot[1]:
                        self._send(ws, BackMsg, fragment=fragment, page_hash=page_hash)
                        self.fragment_reruns += 1
                        slot[1] += slot[0]

    def _send(self, ws, BackMsg, fragment: str | None, page_hash: str) -> None:
        back = BackMsg()
        cs = back.rerun_script
        cs.query_string = f"run={self.run_id}"
        cs.page_name = "train"
        cs.page_script_hash = page_hash
        if fragment:
            cs.fragment_id = fragment
            cs.is_auto_rerun = True
        ws.send(back.SerializeToString())


def start_server(workspace: Path) -> tuple[subprocess.Popen, int]:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TRANSFERLAB_WORKSPACE": str(workspace)}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.address", "127.0.0.1", "--server.port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read() == b"ok":
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def train_once(browser, port: int, workspace: Path, watchers: int, epochs: int) -> tuple[list[float], int]:
    """Start a full fine-tuning of the sample data from a real browser session; return epoch seconds."""
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{port}/")
    page.get_by_role("button", name="Use the sample data").click()
    page.get_by_text("Dataset · sample").wait_for(timeout=60000)
    page.get_by_role("link", name="Model").first.click()
    box = page.locator(".st-key-w_epochs input")
    box.click()
    box.press("Control+A")
    box.type(str(epochs))
    box.press("Enter")
    page.wait_for_timeout(500)
    page.get_by_role("link", name="Train").first.click()
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url(re.compile(r"run="), timeout=30000)
    run_id = re.search(r"run=([\w-]+)", page.url).group(1)
    page.goto("about:blank")  # the owner stops watching: only the watchers below poll
    stop = threading.Event()
    threads = [Watcher(port, run_id, stop) for _ in range(watchers)]
    for t in threads:
        t.start()
    from core.runs import RunDir
    run = RunDir(workspace / "runs" / run_id)
    while run.read_status().get("status") in ("queued", "running", "unknown"):
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(5)
    page.close()
    rows = run.read_metrics()
    reruns = sum(t.fragment_reruns for t in threads)
    print(f"  watchers={watchers}: epochs {[round(r['seconds'], 2) for r in rows]}, {reruns} fragment reruns",
          flush=True)
    return [r["seconds"] for r in rows[1:]], reruns  # the first epoch includes warm-up


def main() -> None:
    from playwright.sync_api import sync_playwright
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--watchers", type=int, default=10)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="alternating unwatched/watched pairs")
    args = p.parse_args()
    workspace = Path(tempfile.mkdtemp(prefix="bench-poll-"))
    server, port = start_server(workspace)
    try:
        with sync_playwright() as pw:
            chromium = shutil.which("chromium") or "/usr/bin/chromium"
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
            ratios = []
            for _ in range(args.repeats):  # alternate, so drift of the machine hits both sides alike
                quiet, _ = train_once(browser, port, workspace, 0, args.epochs)
                busy, reruns = train_once(browser, port, workspace, args.watchers, args.epochs)
                ratios.append(statistics.median(busy) / statistics.median(quiet))
            browser.close()
    finally:
        server.terminate()
    print(f"\nslowdown with {args.watchers} watchers, per pair: {', '.join(f'{r:.3f}x' for r in ratios)}; "
          f"median {statistics.median(ratios):.3f}x (target < 1.10x)")


if __name__ == "__main__":
    main()
