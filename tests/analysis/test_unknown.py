"""The unknown-input ("none of these") score: fitted at the end of a run, shipped in the bundle, in predict and in
the ONNX export with the same decision. Tiny generated images and a random tiny backbone (seconds)."""

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.analysis.predictions import load_predictions
from core.analysis.unknown import ACCEPT, FILE, METHODS, accept_threshold, fit_scorer, load_scorer, save_scorer, scores
from core.cli import main
from core.config import TrainConfig
from core.engine.train import train
from core.export.artifacts import export_run
from core.export.bundle import load_bundle
from core.export.onnx import OnnxRunner, read_metadata
from core.export.parity import export_file
from core.runs import RunDir
from tests.conftest import COLORS, make_image, tiny_train_config

VAL_PER_CLASS = 14  # 42 validation images: the threshold accepts 40 of them


def smooth_image(path: Path, color: tuple[int, int, int], seed: int, size: int = 96) -> None:
    """A smooth picture around `color` (6 x 6 random blocks, upscaled): unlike pixel noise, the run's decoding and
    the bundle's timm transform give the random tiny backbone nearly the same features, as real photos do."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color)[None, None] + rng.normal(0, 60, (6, 6, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).resize((size, size), Image.BICUBIC).save(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunDir:
    """A probe run on 3 colour classes with a train/ and a val/ split (12 + 14 images per class)."""
    root = tmp_path_factory.mktemp("unknown")
    for name, color in COLORS.items():
        for i in range(12 + VAL_PER_CLASS):
            split = "train" if i < 12 else "val"
            smooth_image(root / "colors" / split / name / f"{name}_{i}.png", color, seed=i)
    result = train(tiny_train_config(root / "colors", root / "runs").replace(freeze="probe"))
    assert result.status == "completed", result
    return RunDir(Path(result.run_dir))


@pytest.fixture(scope="module")
def others(tmp_path_factory) -> Path:
    """Images unlike the training ones: grey, yellow and purple noise, and larger noisy pictures."""
    folder = tmp_path_factory.mktemp("others")
    for i, color in enumerate([(128, 128, 128), (230, 220, 30), (150, 30, 160), (10, 10, 10), (250, 250, 250)]):
        make_image(folder / f"other_{i}.png", color, size=80, seed=100 + i)
        make_image(folder / f"grey_{i}.png", (20 + 50 * i,) * 3, seed=200 + i)
    return folder


def predict(*args) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["predict", *map(str, args)]) == 0
    return out.getvalue().strip().splitlines()


def val_paths(run: RunDir) -> list[Path]:
    root = Path(TrainConfig.load(run.config).data)
    return [root / p for p in load_predictions(run.predictions).splits["val"].paths]


def test_predict_json_has_the_verdict_on_every_line_and_flags_about_5_percent_of_validation(run):
    paths = val_paths(run)
    assert len(paths) == 3 * VAL_PER_CLASS
    lines = [json.loads(line) for line in predict(run.bundle_dir, *paths, "--json")]
    assert len(lines) == len(paths)
    assert all(isinstance(x["unknown"], bool) and isinstance(x["unknown_score"], float) for x in lines)
    flagged = sum(x["unknown"] for x in lines) / len(lines)
    assert flagged == pytest.approx(1 - ACCEPT, abs=0.03)  # 2 of 42
    summary = json.loads((run.bundle_dir / "summary.json").read_text())
    assert summary["unknown"]["val_flagged"] == pytest.approx(1 - ACCEPT, abs=0.03)
    assert len(load_predictions(run.predictions).splits["val"].unknown) == len(paths)  # for the Inspect page
    card = (run.bundle_dir / "README.md").read_text()
    assert "none of these" in card and f"{summary['unknown']['threshold']:.4g}" in card


def test_predict_text_says_none_of_these_and_still_names_the_closest_class(run, others):
    scorer = load_scorer(run.bundle_dir / FILE)
    lines = predict(run.bundle_dir, others, "--unknown-threshold", "-1")  # every image over the threshold
    assert len(lines) == 10
    assert all("none of these" in line and "closest: " in line for line in lines)
    assert not any("none of these" in line for line in predict(run.bundle_dir, others, "--unknown-threshold", "1e9"))
    assert scorer.method in METHODS


def test_onnx_export_takes_the_bundles_decision_on_validation_images_and_on_unknowns(run, others):
    check = export_run(run, "onnx")
    assert check.passed, check.reason
    assert check.unknown_agree == 1.0 and check.images == 3 * VAL_PER_CLASS
    meta = json.loads(read_metadata(export_file(run, "onnx"))["unknown"])
    assert meta["outputs"] == ["unknown_score", "unknown"]
    loaded = load_bundle(run.bundle_dir)
    runner = OnnxRunner(export_file(run, "onnx"))
    paths = sorted(others.iterdir())
    x = loaded.inputs(paths)
    _, score, flag = runner.with_unknown(x)
    expected = loaded.assess(paths)
    assert flag.tolist() == [p.unknown for p in expected]
    np.testing.assert_allclose(score, [p.unknown_score for p in expected], rtol=1e-4, atol=1e-5)
    assert flag.any() or score.max() < float(loaded.unknown.threshold)


def test_bundle_still_loads_with_plain_timm_and_an_older_bundle_predicts_with_null_fields(run, tmp_path):
    import timm
    model = timm.create_model(f"local-dir:{run.bundle_dir}", pretrained=True).eval()
    loaded = load_bundle(run.bundle_dir)
    x = torch.from_numpy(loaded.inputs(val_paths(run)[:4]))
    with torch.inference_mode():
        torch.testing.assert_close(model(x), loaded.model(x))
    old = Path(shutil.copytree(run.bundle_dir, tmp_path / "bundle"))
    (old / FILE).unlink()
    lines = [json.loads(line) for line in predict(old, val_paths(run)[0], "--json")]
    assert lines[0]["unknown"] is None and lines[0]["unknown_score"] is None and lines[0]["top"]


@pytest.mark.parametrize("method", METHODS)
def test_each_method_scores_far_points_higher_and_survives_a_save(method, tmp_path):
    rng = np.random.default_rng(0)
    means = rng.normal(0, 1, (3, 16)) * 3 + 4
    y = np.repeat(np.arange(3), 30)
    x = means[y] + rng.normal(0, 1, (90, 16))
    head = torch.nn.Linear(16, 3)
    with torch.no_grad():  # a head that separates the classes: logits = -squared distance to each mean
        head.weight.copy_(torch.from_numpy(2 * means).float())
        head.bias.copy_(torch.from_numpy(-(means ** 2).sum(1)).float())
    near = means[y[:30]] + rng.normal(0, 1, (30, 16))
    far = rng.normal(0, 1, (30, 16)) * 3 - 6 if method in ("knn", "mahalanobis") else \
        means.mean(0) + rng.normal(0, 0.5, (30, 16))  # logit scores: between the classes
    scorer = fit_scorer(method, x, y, 3)
    with torch.inference_mode():
        logits = head(torch.from_numpy(np.r_[near, far]).float())
    s = scores(scorer, logits, np.r_[near, far])
    assert s[30:].mean() > s[:30].mean()
    scorer.threshold.fill_(accept_threshold(s[:30]))
    save_scorer(scorer, tmp_path / FILE)
    again = load_scorer(tmp_path / FILE)
    np.testing.assert_allclose(scores(again, logits, np.r_[near, far]), s, rtol=1e-6)
    assert float(again.threshold) == float(scorer.threshold)


def test_threshold_accepts_95_percent_and_sits_between_scores():
    s = np.arange(100, dtype=float)
    t = accept_threshold(s)
    assert (s <= t).mean() == 0.95 and t not in s
    assert accept_threshold(np.array([1.0, 2.0])) > 2.0  # too few images to reject any: accept all


def test_a_folder_of_other_images_is_scored_as_predict_scores_it(run, others):
    """The Inspect page's "other images": every image of the folder scored by the bundle as predict scores it, the
    share flagged several times the validation images' 5% (a random tiny backbone: 4 of 10 here); a model without
    a scorer is refused with a sentence."""
    from core.workflows.other_images import score_other_images
    got = score_other_images(run.bundle_dir, others)
    assert sorted(Path(p).name for p in got.paths) == sorted(p.name for p in others.glob("*.png"))
    assert got.flagged >= 0.2 and got.threshold == load_bundle(run.bundle_dir).unknown_threshold
    lines = {Path(x["path"]).name: x["unknown_score"]
             for x in map(json.loads, predict(run.bundle_dir, others, "--json"))}
    assert np.allclose([lines[Path(p).name] for p in got.paths], got.scores, atol=1e-5)
    (run.bundle_dir / FILE).rename(run.bundle_dir / "moved.safetensors")
    try:
        with pytest.raises(ValueError, match="no unknown-input score"):
            score_other_images(run.bundle_dir, others)
    finally:
        (run.bundle_dir / "moved.safetensors").rename(run.bundle_dir / FILE)
