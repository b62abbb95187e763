"""The Inspect page as a user meets it after training on an uploaded zip: calibration, then the analyses job and
its gallery of likely mislabeled images, drawn from the zip's extracted files."""

import re
import time

import pytest
from playwright.sync_api import expect
from test_browser import go, upload_mini_zip  # same folder: pytest puts it on sys.path (rootdir-relative imports)

pytestmark = pytest.mark.e2e
VISIBLE_IMAGES_JS = """() => [...document.querySelectorAll('[data-testid=stImage] img')]
    .filter(i => i.offsetParent !== null && i.complete && i.naturalWidth > 0).length"""


def wait_for_job(page, tab: str, done_text: str, timeout_s: float = 120.0) -> None:
    """The job's view (with its Stop button) shows above the tabs while it runs; when it ends the page is redrawn
    with the reports (on its first tab): wait for the end, then open `tab` and its report."""
    stop = page.get_by_role("button", name="Stop")
    stop.wait_for(timeout=30000)
    stop.wait_for(state="detached", timeout=timeout_s * 1000)
    page.get_by_role("tab", name=tab).click()
    page.get_by_text(done_text).first.wait_for(timeout=30000)


def test_inspect_after_a_probe_run_on_a_zip(app_url, page, hymenoptera, tmp_path):
    upload_mini_zip(page, app_url, hymenoptera, tmp_path)
    go(page, "Model")
    page.locator(".st-key-w_freeze").get_by_text("probe", exact=True).click()
    page.get_by_text(re.compile(r"2,562 of [\d,]+ parameters train")).wait_for(timeout=30000)
    go(page, "Train")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(re.compile(r"Training completed")).first.wait_for(timeout=180000)

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
