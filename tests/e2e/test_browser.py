"""The product as a user meets it: upload a zip, train, watch, download, and load what was downloaded."""

import json
import re
import time
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from core.export.bundle import load_bundle

pytestmark = pytest.mark.e2e


def ants_bees_zip(src: Path, dest: Path, per_class: int = 8) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for c in ("ants", "bees"):
            for p in sorted((src / "train" / c).glob("*.jpg"))[:per_class]:
                zf.write(p, f"mini/{c}/{p.name}")
    return dest


def settled(page) -> None:
    """The page's script run has ended: no element is left stale from the run before (Streamlit marks them
    `data-stale` until the run re-sends or removes them). A click that starts another run before then interrupts
    this one: on the Model page, a choice whose caption is drawn but not yet saved is lost; on the Label page, a key
    pressed while the grid is redrawn reaches no button (seen once in `make test`: the count stayed at 4)."""
    expect(page.locator("[data-testid=stElementContainer][data-stale=true]")).to_have_count(0, timeout=30000)


def go(page, name: str) -> None:
    """Open a page from the navigation once the current page's run has ended; what the caller does next waits on an
    element of that page only."""
    settled(page)
    page.get_by_role("link", name=name).first.click()
    page.wait_for_url(re.compile(rf"/{name.lower()}(\?|$)"))  # every page's url_path is its title, lower case


APP_PAGES = ("Data", "Model", "Train", "Results", "Predict", "Export")
# Streamlit's own list of the files in pages/ (shown until st.navigation runs) labels them like this
FILE_LINKS = ("app", "_ui", "ui", "_charts", "charts")
NAV_LABELS_JS = """() => [...document.querySelectorAll('[data-testid=stSidebarNav] a, [data-testid=stSidebarNavLink]')]
    .map(a => a.innerText.split('\\n').map(t => t.trim()).filter(Boolean).pop())"""
# the navigation's labels once it lists Export (else null, and wait_for_function polls on), and whether the
# sidebar's device line (written after torch is imported) is there in that same frame
FIRST_LOOK_JS = "() => { const labels = (" + NAV_LABELS_JS + """)();
    if (!labels.includes('Export')) return null;
    return {labels, engine_loaded: document.body.innerText.includes('Device · ')};
}"""


def test_first_paint_shows_the_apps_navigation(fresh_app_url, page):
    """Right after `make run` the sidebar lists the app's pages, not the files in pages/, and it does so before the
    engine (torch: seconds, tens on a busy machine) has loaded: in the first frame that shows the navigation the
    sidebar's device line, written once torch is imported, is not there yet. An ordering, not a time: it holds on
    a loaded machine, and fails if the app imports torch before it draws the navigation."""
    page.goto(fresh_app_url)
    # polled every animation frame: this is the first look a user gets at the navigation
    first_look = page.wait_for_function(FIRST_LOOK_JS, timeout=60000).json_value()
    labels = first_look["labels"]
    assert [label for label in labels if label in APP_PAGES] == list(APP_PAGES), labels
    assert not set(labels) & set(FILE_LINKS), labels
    assert not first_look["engine_loaded"], "the navigation appeared only after the engine (torch) had loaded"
    page.get_by_text("Device · ").wait_for(timeout=120000)  # and then the engine does load


def chart_trace(page, timeout_s: float = 20.0, points: int | None = None) -> dict:
    """The first chart's first trace (the Train page's loss curve, train split), once it has `points` points:
    the full rerun after "Training completed" redraws the chart a moment after the message."""
    deadline = time.monotonic() + timeout_s
    while True:
        # null while a rerun redraws the chart: wait for it like for the points
        trace = page.evaluate("() => { const p = document.querySelector('.js-plotly-plot');"
                              " if (!p || !p.data) return null; const d = p.data[0];"
                              " return {x: Array.from(d.x), y: Array.from(d.y)}; }")
        if trace is not None and (points is None or len(trace["x"]) == points) or time.monotonic() > deadline:
            return trace or {"x": [], "y": []}
        page.wait_for_timeout(250)


def expect_empty(folder: Path, timeout_s: float = 15.0) -> None:
    """The page removes its upload folder as its script run ends, a moment after the results are drawn."""
    deadline = time.monotonic() + timeout_s
    while any(folder.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(folder.iterdir()), sorted(folder.rglob("*"))


def upload_mini_zip(page, app_url, hymenoptera, tmp_path) -> None:
    """Open the app and upload a 16-image ants/bees zip on the Data page."""
    page.goto(app_url)
    page.get_by_text("Labeled photos, one folder per class").wait_for(timeout=60000)
    page.get_by_role("tab", name="Upload a zip").click()
    page.locator(".st-key-zip_up input[type=file]").set_input_files(str(ants_bees_zip(hymenoptera,
                                                                                        tmp_path / "mini.zip")))
    page.get_by_text("Dataset · zip: mini.zip").wait_for(timeout=60000)


def train_probe_on_mini_zip(page, app_url, hymenoptera, tmp_path) -> None:
    """Upload the mini zip, choose a probe on the Model page, train it and wait until it completes."""
    upload_mini_zip(page, app_url, hymenoptera, tmp_path)
    go(page, "Model")
    page.locator(".st-key-w_freeze").get_by_text("probe", exact=True).click()
    page.get_by_text(re.compile(r"2,562 of [\d,]+ parameters train")).wait_for(timeout=30000)
    go(page, "Train")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(re.compile(r"Training completed")).first.wait_for(timeout=180000)


def test_upload_train_download_predict(app_url, workspace, page, hymenoptera, tmp_path):
    upload_mini_zip(page, app_url, hymenoptera, tmp_path)
    page.locator(".js-plotly-plot").first.wait_for(timeout=30000)

    go(page, "Model")
    page.locator(".st-key-w_freeze").get_by_text("probe", exact=True).click()
    page.get_by_text(re.compile(r"2,562 of [\d,]+ parameters train")).wait_for(timeout=30000)

    go(page, "Train")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(re.compile(r"Training completed")).first.wait_for(timeout=180000)
    run_id = re.search(r"run=([\w-]+)", page.url).group(1)
    epochs = [json.loads(line) for line in (workspace / "runs" / run_id / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))
    loss = chart_trace(page, points=len(epochs))
    assert loss["x"] == [e["epoch"] for e in epochs], "the loss chart needs one point per finished epoch"
    assert loss["y"] == pytest.approx([e["train_loss"] for e in epochs], abs=1e-6)

    go(page, "Results")
    page.get_by_text("Confusion matrix").first.wait_for(timeout=30000)

    go(page, "Export")
    with page.expect_download(timeout=60000) as dl:
        page.get_by_role("button", name="Download model bundle (.zip)").click()
    bundle = tmp_path / dl.value.suggested_filename
    dl.value.save_as(bundle)
    query = sorted((hymenoptera / "val" / "bees").glob("*.jpg"))[0]
    top = load_bundle(bundle, extract_to=tmp_path / "unzipped").predict([query], topk=2)[0]
    assert top[0][0] == "bees", top
    on_server = load_bundle(workspace / "runs" / run_id / "bundle").predict([query], topk=2)[0]
    assert [c for c, _ in top] == [c for c, _ in on_server]
    assert [p for _, p in top] == pytest.approx([p for _, p in on_server], abs=1e-5)

    go(page, "Predict")
    page.locator(".st-key-predict_up input[type=file]").set_input_files(str(query))
    page.get_by_text(re.compile(r"→ bees")).wait_for(timeout=60000)
    # the uploads went to a folder of their own under the workspace (not the system temp), removed when done
    uploads = workspace / "predict"
    assert uploads.is_dir(), "the Predict page wrote its uploads outside the workspace"
    expect_empty(uploads)
    expect(page.get_by_text("None", exact=True)).to_have_count(0)  # no stray value printed by Streamlit's magic


def set_number(page, key: str, value: int) -> None:
    box = page.locator(f".st-key-{key} input")
    # a rerun in flight (after the click before) can briefly show the old widget beside the new one, even after a
    # moment with one: then the typing is refused (strict mode) and done again once the rerun has settled
    for attempt in range(3):
        expect(box).to_have_count(1, timeout=15000)
        try:
            box.click()
            box.press("Control+A")
            box.type(str(value))
            box.press("Enter")
            break
        except PlaywrightError:
            if attempt == 2:
                raise
            page.wait_for_timeout(1000)
    page.wait_for_timeout(500)


def stop_training(page, timeout_s: float = 180.0) -> None:
    """Press the Train page's Stop until the page says the training stopped. The button sits in a fragment that is
    drawn again at every poll: on a loaded machine a click can wait on a button that has just been replaced (seen
    once in `make test`: 30 s after "done scrolling"), so a press that times out, or changes nothing, is repeated."""
    stop, stopped = page.get_by_role("button", name="Stop"), page.get_by_text("Training stopped").first
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            stop.first.click(timeout=10000)
            stopped.wait_for(timeout=20000)
            return
        except PlaywrightTimeout:
            if stopped.is_visible():
                return
    raise AssertionError(f"the training did not stop within {timeout_s:.0f} s of pressing Stop")


def test_two_sessions_queue_and_both_finish(app_url, browser, tmp_path):
    """Session A trains; session B's Start queues behind it while A runs; A is stopped and B then trains to the end;
    B can watch A's run. Both sessions are set up before A starts (pages load slowly on a server that trains), and
    A has 200 epochs and no early stopping so that it still runs when B starts (at 3 epochs, or stopped early, it
    could finish first and B never queued); each step waits on the state it asserts."""
    sessions = []
    for freeze, epochs in (("full", 200), ("probe", 5)):
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        page.goto(app_url)
        page.get_by_role("button", name="Use the sample data").click()
        page.get_by_text("Dataset · sample: ants vs bees").wait_for(timeout=60000)
        go(page, "Model")
        page.locator(".st-key-w_freeze").get_by_text(freeze, exact=True).click()
        page.wait_for_timeout(500)
        set_number(page, "w_epochs", epochs)
        if not sessions:
            set_number(page, "w_early_stopping", 0)
        go(page, "Train")
        page.get_by_role("button", name="Start training").wait_for(timeout=60000)
        sessions.append((ctx, page))
    (ctx_a, a), (ctx_b, b) = sessions
    try:
        a.get_by_role("button", name="Start training").click()
        a.get_by_role("button", name="Stop").wait_for(timeout=60000)  # A's job holds the device
        b.get_by_role("button", name="Start training").click()
        b.get_by_text(re.compile(r"yours is queued|Queued \(position")).first.wait_for(timeout=60000)
        stop_training(a)
        b.get_by_text("Training completed").first.wait_for(timeout=240000)
    except Exception:
        a.screenshot(path=str(tmp_path / "fail-a.png"), full_page=True)
        b.screenshot(path=str(tmp_path / "fail-b.png"), full_page=True)
        if a.get_by_role("button", name="Stop").count():  # a 200-epoch job left running would load the server
            stop_training(a)                              # for the tests after this one
        raise
    run_a = re.search(r"run=([\w-]+)", a.url).group(1)
    run_b = re.search(r"run=([\w-]+)", b.url).group(1)
    assert run_a != run_b
    b.get_by_text("Other trainings on this server").click()
    b.locator(f".st-key-watch_{run_a} button").click()
    b.wait_for_url(re.compile(f"run={run_a}"), timeout=30000)
    b.get_by_text("Training stopped").first.wait_for(timeout=30000)
    ctx_a.close()
    ctx_b.close()
