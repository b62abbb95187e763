"""The product as a user meets it: upload a zip, train, watch, download, and load what was downloaded."""

import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import expect

from core.export.bundle import load_bundle

pytestmark = pytest.mark.e2e
SHOTS_ENV = "TRANSFERLAB_SCREENSHOTS"  # set to a folder to also copy the screenshots there (README images)


def shot(page, folder: Path, name: str) -> None:
    page.wait_for_timeout(400)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get(SHOTS_ENV):
        shutil.copy(path, Path(os.environ[SHOTS_ENV]) / path.name)


def ants_bees_zip(src: Path, dest: Path, per_class: int = 8) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for c in ("ants", "bees"):
            for p in sorted((src / "train" / c).glob("*.jpg"))[:per_class]:
                zf.write(p, f"mini/{c}/{p.name}")
    return dest


def go(page, name: str) -> None:
    page.get_by_role("link", name=name).first.click()
    page.wait_for_timeout(300)


def test_upload_train_download_predict(app_url, page, hymenoptera, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    page.goto(app_url)
    page.get_by_text("Labeled photos, one folder per class").wait_for(timeout=60000)
    page.get_by_role("tab", name="Upload a zip").click()
    page.locator(".st-key-zip_up input[type=file]").set_input_files(str(ants_bees_zip(hymenoptera,
                                                                                        tmp_path / "mini.zip")))
    page.get_by_text("Dataset · zip: mini.zip").wait_for(timeout=60000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=30000)
    shot(page, shots, "1-data")

    go(page, "Model")
    page.locator(".st-key-w_freeze").get_by_text("probe", exact=True).click()
    page.get_by_text(re.compile(r"2,562 of [\d,]+ parameters train")).wait_for(timeout=30000)
    shot(page, shots, "2-model")

    go(page, "Train")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(re.compile(r"Training completed")).first.wait_for(timeout=180000)
    points = page.evaluate("() => document.querySelector('.js-plotly-plot').data[0].y.length")
    assert points >= 1
    shot(page, shots, "3-train")

    go(page, "Results")
    page.get_by_text("Confusion matrix").first.wait_for(timeout=30000)
    shot(page, shots, "4-results")

    go(page, "Export")
    with page.expect_download(timeout=60000) as dl:
        page.get_by_role("button", name="Download model bundle (.zip)").click()
    bundle = tmp_path / dl.value.suggested_filename
    dl.value.save_as(bundle)
    shot(page, shots, "6-export")
    model = load_bundle(bundle, extract_to=tmp_path / "unzipped")
    query = sorted((hymenoptera / "val" / "bees").glob("*.jpg"))[0]
    top = model.predict([query])[0]
    assert top[0][0] in ("ants", "bees") and 0.5 <= top[0][1] <= 1.0

    go(page, "Predict")
    page.locator(".st-key-predict_up input[type=file]").set_input_files(str(query))
    page.get_by_text(re.compile(r"→ (ants|bees)")).wait_for(timeout=60000)
    shot(page, shots, "5-predict")


def set_number(page, key: str, value: int) -> None:
    box = page.locator(f".st-key-{key} input")
    # a rerun in flight (after the click before) can briefly show the old widget beside the new one
    expect(box).to_have_count(1, timeout=15000)
    box.click()
    box.press("Control+A")
    box.type(str(value))
    box.press("Enter")
    page.wait_for_timeout(500)


def test_two_sessions_queue_and_both_complete(app_url, browser, tmp_path):
    """Session A trains; session B's Start queues behind it; both finish; B can watch A's run."""
    sessions = []
    for freeze, epochs in (("full", 3), ("probe", 5)):
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        page.goto(app_url)
        page.get_by_role("button", name="Use the sample data").click()
        page.get_by_text("Dataset · sample: ants vs bees").wait_for(timeout=60000)
        go(page, "Model")
        page.locator(".st-key-w_freeze").get_by_text(freeze, exact=True).click()
        page.wait_for_timeout(500)
        set_number(page, "w_epochs", epochs)
        go(page, "Train")
        page.get_by_role("button", name="Start training").click()
        sessions.append((ctx, page))
    (ctx_a, a), (ctx_b, b) = sessions
    try:
        b.get_by_text(re.compile(r"yours is queued|Queued \(position")).first.wait_for(timeout=30000)
        for page in (a, b):
            page.get_by_text("Training completed").first.wait_for(timeout=240000)
    except Exception:
        a.screenshot(path=str(tmp_path / "fail-a.png"), full_page=True)
        b.screenshot(path=str(tmp_path / "fail-b.png"), full_page=True)
        raise
    run_a = re.search(r"run=([\w-]+)", a.url).group(1)
    run_b = re.search(r"run=([\w-]+)", b.url).group(1)
    assert run_a != run_b
    b.get_by_text("Other trainings on this server").click()
    b.locator(f".st-key-watch_{run_a} button").click()
    b.wait_for_url(re.compile(f"run={run_a}"), timeout=30000)
    b.get_by_text("Training completed").first.wait_for(timeout=30000)
    ctx_a.close()
    ctx_b.close()
