"""The Label page as a user meets it after a first probe run: a pool of unlabeled photos, five suggested images
labeled (four with clicks, one with the keyboard), "train again" on the derived dataset, and the new run's lineage
naming the labeling round."""

import re

import pytest
from playwright.sync_api import expect
from test_browser import go, settled, train_probe_on_mini_zip  # same folder: pytest puts it on sys.path

pytestmark = pytest.mark.e2e


def test_label_five_suggestions_and_train_again(app_url, page, hymenoptera, tmp_path):
    train_probe_on_mini_zip(page, app_url, hymenoptera, tmp_path)  # 8 ants + 8 bees
    first_run = re.search(r"run=([\w-]+)", page.url).group(1)

    truth = {p.name: c for c in ("ants", "bees") for p in sorted((hymenoptera / "train" / c).glob("*.jpg"))[8:12]}
    go(page, "Label")
    page.locator(".st-key-pool_up input[type=file]").set_input_files(
        [str(hymenoptera / "train" / c / name) for name, c in truth.items()])
    page.get_by_text("Pool · 8 uploaded images").wait_for(timeout=60000)
    page.get_by_role("button", name="Suggest images to label").click()
    labeled = page.locator("[data-testid=stMetric]").filter(has_text="Labeled this round").locator(
        "[data-testid=stMetricValue]")
    expect(labeled).to_have_text("0", timeout=120000)

    for n in range(1, 6):
        settled(page)  # the run the last answer started has ended: its card has left the grid, the keys are bound
        card = page.locator("[class*=st-key-card_]").first  # answered cards leave the grid
        name = re.search(r"(\S+\.jpg)", card.locator("[data-testid=stImageCaption]").inner_text()).group(1)
        if n < 5:
            # the first card's buttons also show their key ("ants" then "1"): match the class name at the start
            card.get_by_role("button", name=re.compile(rf"^{truth[name]}")).click()
        else:  # the keyboard answers for the first card: 1 the first class (ants), 2 the second (bees)
            page.keyboard.press(str(("ants", "bees").index(truth[name]) + 1))
        expect(labeled).to_have_text(str(n), timeout=30000)

    page.get_by_role("button", name="Train again with 5 new label(s)").click()
    page.get_by_text(re.compile(r"Training completed")).first.wait_for(timeout=180000)
    second_run = re.search(r"run=([\w-]+)", page.url).group(1)
    assert second_run != first_run

    go(page, "Results")
    lineage = page.get_by_text(re.compile(r"Lineage · "))
    expect(lineage).to_contain_text(f"run {second_run} on derived-", timeout=30000)
    expect(lineage).to_contain_text("(5 labels from suggestions, labeling round 1")  # then pseudo-labels, if any
