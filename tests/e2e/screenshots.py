"""The README's screenshots, taken from the current app: `make screenshots` (python -m tests.e2e.screenshots).

Starts the app on a free loopback port with an empty workspace (the e2e tests' server and Debian chromium), picks
the sample data (assets/sample_data), trains a quick probe, and saves one 1280x800 PNG per main page to
assets/screenshots/<page>.png. Offline: the sample data and the bundled weights ship with the app. Takes about a
minute; every wait is on what the page shows when it is ready.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from tests.e2e.conftest import APP_DIR, CHROMIUM, launch_chromium, streamlit_server

OUT = APP_DIR / "assets" / "screenshots"
SAMPLE = APP_DIR / "assets" / "sample_data"
PAGES = ("data", "model", "train", "results", "inspect", "predict", "export")
WAIT_MS = 180_000  # the first page imports torch; training takes tens of seconds on a busy machine


def take(page, out: Path) -> list[Path]:
    """Walk the app as a newcomer does and save each page once it has drawn what it is for."""
    saved = []

    def shot(name: str, ready) -> None:
        ready.first.wait_for(timeout=WAIT_MS)
        page.wait_for_timeout(800)  # let charts finish their transition
        page.screenshot(path=str(out / f"{name}.png"))
        saved.append(out / f"{name}.png")

    def go(title: str) -> None:
        page.get_by_role("link", name=title).first.click()

    page.get_by_role("button", name="Use the sample data").click(timeout=WAIT_MS)
    shot("data", page.locator(".js-plotly-plot"))
    go("Model")
    page.locator(".st-key-w_freeze").get_by_text("probe", exact=True).click(timeout=WAIT_MS)
    shot("model", page.get_by_text(re.compile(r"parameters train \(")))
    go("Train")
    page.get_by_role("button", name="Start training").click(timeout=WAIT_MS)
    page.get_by_text("Training completed").first.wait_for(timeout=WAIT_MS)
    shot("train", page.locator(".js-plotly-plot"))
    go("Results")
    shot("results", page.get_by_text("Confusion matrix"))
    go("Inspect")
    shot("inspect", page.locator("[data-testid=stMetric]").filter(has_text="ECE before"))
    go("Predict")
    page.locator(".st-key-predict_up input[type=file]").set_input_files(
        str(sorted((SAMPLE / "val" / "bees").iterdir())[0]))
    page.set_viewport_size({"width": 1280, "height": 1300})  # the answer sits below the camera's box
    shot("predict", page.get_by_text(re.compile(r"→ \w+")))
    page.set_viewport_size({"width": 1280, "height": 800})
    go("Export")
    shot("export", page.get_by_role("button", name="Download model bundle (.zip)"))
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder for the PNGs (default {OUT})")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"chromium not found at {CHROMIUM}; install it with `make browser`.", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="transferlab-shots-") as tmp, \
            streamlit_server(Path(tmp), Path(tmp) / "server.log") as url, sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url)
        saved = take(page, args.out)
        browser.close()
    stale = [f for f in args.out.glob("*.png") if f.stem not in PAGES]
    for f in stale:  # pictures of pages the app no longer has (or no longer names so)
        f.unlink()
    print("\n".join(f"saved {f.relative_to(APP_DIR) if f.is_relative_to(APP_DIR) else f}" for f in saved)
          + "".join(f"\nremoved {f.name}" for f in stale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
