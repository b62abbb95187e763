"""Temperature scaling: it lowers the calibration error of an overconfident model, ships in the bundle, and the
bundle's predict gives the calibrated probabilities the app shows."""

import json
from pathlib import Path

import numpy as np
import pytest

from core.analysis import calibration as cal
from core.analysis.inspect import calibrated, open_view
from core.export.bundle import load_bundle


def overconfident(n: int = 600, classes: int = 3, scale: float = 4.0, seed: int = 0):
    """Logits of a model whose true temperature is `scale`: labels drawn from softmax(z), logits = scale * z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, classes))
    p = cal.softmax_t(z, 1.0)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return z * scale, labels


def test_fitted_temperature_recovers_the_overconfidence_and_lowers_ece():
    logits, labels = overconfident()
    rep = cal.calibrate(logits, labels)
    assert rep.temperature == pytest.approx(4.0, rel=0.25)
    assert rep.ece_after < rep.ece_before / 2
    assert rep.nll_after < rep.nll_before
    assert rep.warning == ""  # 600 images are enough
    # top-1 never changes under a temperature
    assert (cal.softmax_t(logits, rep.temperature).argmax(1) == logits.argmax(1)).all()


def test_few_validation_images_are_warned_about():
    logits, labels = overconfident(n=40)
    assert "only 40 validation images" in cal.calibrate(logits, labels).warning


def test_log_probabilities_stand_in_for_logits():
    logits, labels = overconfident(n=50)
    from_probs = cal.logits_from_probs(cal.softmax_t(logits, 1.0))
    np.testing.assert_allclose(cal.softmax_t(from_probs, 2.5), cal.softmax_t(logits, 2.5), atol=1e-9)


def test_reliability_bins_count_every_image():
    logits, labels = overconfident(n=100)
    rows = cal.reliability(cal.softmax_t(logits, 1.0), labels)
    assert len(rows) == cal.BINS and sum(r["count"] for r in rows) == 100


def test_run_ships_its_temperature_and_predict_applies_it(trained_run):
    summary = trained_run.read_summary()
    t = summary.calibration["temperature"]
    assert summary.calibration["num"] == summary.val.num
    assert summary.calibration["ece_after"] <= summary.calibration["ece_before"] + 1e-12
    assert json.loads((trained_run.bundle_dir / "config.json").read_text())["temperature"] == pytest.approx(t)

    model = load_bundle(trained_run.bundle_dir)
    assert model.temperature == pytest.approx(t)
    view = open_view(trained_run)
    val = view.preds.splits["val"]
    images = [Path(view.cfg.data) / p for p in val.paths]
    k = len(view.classes)
    as_dict = [dict(top) for top in model.predict(images, topk=k)]
    model.temperature = 1.0
    raw = np.array([[dict(top)[c] for c in view.classes] for top in model.predict(images, topk=k)])
    expected = cal.softmax_t(cal.logits_from_probs(raw), t)  # the app's arithmetic on the bundle's raw output
    for row, got in zip(expected, as_dict, strict=True):
        assert got == pytest.approx(dict(zip(view.classes, row, strict=True)), abs=1e-5)
    # and the app's stored (calibrated) predictions name the same class as the bundle for every image
    assert (calibrated(val, view.temperature).argmax(1) == expected.argmax(1)).all()


@pytest.mark.slow
def test_ants_bees_bundle_predict_equals_the_calibrated_probabilities_the_app_shows(hymenoptera, ants_bees_run):
    run = ants_bees_run
    view = open_view(run)
    val = view.preds.splits["val"]
    c = view.summary.calibration
    assert c["ece_after"] <= c["ece_before"] and c["temperature"] != 1.0
    got = load_bundle(run.bundle_dir).predict([hymenoptera / p for p in val.paths], topk=2)
    got = np.array([[dict(top)[cl] for cl in view.classes] for top in got])
    np.testing.assert_allclose(got, calibrated(val, view.temperature), atol=1e-4)
