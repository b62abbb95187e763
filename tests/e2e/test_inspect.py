"""The Inspect page as a user meets it after training on an uploaded zip: calibration, then the analyses job and
its gallery of likely mislabeled images, drawn from the zip's extracted files."""

import re
import time

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect
from test_browser import go, train_probe_on_mini_zip  # same folder: pytest puts it on sys.path

pytestmark = pytest.mark.e2e
VISIBLE_IMAGES_JS = """() => [...document.querySelectorAll('[data-testid=stImage] img')]
    .filter(i => i.offsetParent !== null && i.complete && i.naturalWidth > 0).length"""


def wait_for_job(page, tab: str, done_text: str, timeout_s: float = 120.0) -> None:
    """The job's view (with its own Stop button, key "analyses_stop") shows above the tabs while it runs; when it ends
    the page is redrawn with the reports on its first tab. Wait until the job's Stop button is gone and `tab` shows
    `done_text`. The job may end before its button is ever seen, and the header's own "Stop" (shown while a script
    runs) is not the job's, so the wait is on the report, scoped to the job view's key."""
    job_stop = page.locator(".st-key-analyses_stop")
    done = page.get_by_text(done_text).first
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if job_stop.count() == 0:
            page.get_by_role("tab", name=tab).click()
            try:
                done.wait_for(timeout=2000)
                return
            except PlaywrightTimeout:
                pass  # the job is still queued, or the page is being redrawn: look again
        page.wait_for_timeout(300)
    raise AssertionError(f"{done_text!r} never showed on the {tab!r} tab within {timeout_s:.0f} s")


def test_inspect_after_a_probe_run_on_a_zip(app_url, page, hymenoptera, tmp_path):
    train_probe_on_mini_zip(page, app_url, hymenoptera, tmp_path)

    go(page, "Inspect")
    metrics = page.locator("[data-testid=stMetric]")
    expect(metrics.filter(has_text="ECE before")).to_be_visible(timeout=30000)
    for label in ("ECE before", "ECE after", "Temperature"):
        value = metrics.filter(has_text=label).locator("[data-testid=stMetricValue]").inner_text()
        assert re.fullmatch(r"\d+\.\d+", value.strip()), (label, value)

    page.get_by_role("tab", name="Mislabeled?").click()
    page.get_by_role("button", name="Find likely mislabeled images").click()
    wait_for_job(page, "Mislabeled?", "flagged by confident learning")
    expect(page.get_by_role("button", name="Use the edited dataset")).to_be_visible()
    deadline = time.monotonic() + 15
    while page.evaluate(VISIBLE_IMAGES_JS) == 0 and time.monotonic() < deadline:
        page.wait_for_timeout(300)
    assert page.evaluate(VISIBLE_IMAGES_JS) > 0, "no gallery image was drawn (the zip's files were not found)"
