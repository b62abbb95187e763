"""Suggestions from a pool: each method's picks on known geometry, and `python -m core suggest RUN --pool`."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.analysis.suggest import (
    METHODS,
    badge_picks,
    coreset_picks,
    fit_probe,
    gradient_factors,
    gradient_sq_distances,
    margin_scores,
    rank_pool,
    typiclust_picks,
)
from core.cli import main
from tests.conftest import COLORS, make_image


def blobs(seed: int = 0, per: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated Gaussian blobs in 8 dimensions, `per` points each, and their labels."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:3] * 10
    x = np.concatenate([c + rng.normal(0, 1, (per, 8)) for c in centres])
    return x, np.repeat(np.arange(3), per)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_ranks_every_pool_image_once(method):
    x, y = blobs()
    order, scores, picked, probs = rank_pool(method, x[::10], y[::10], x, 3, k=6)
    assert sorted(order.tolist()) == list(range(len(x)))
    assert picked == 6 and len(scores) == len(x) and probs.shape == (len(x), 3)
    rest = scores[picked:]
    assert np.all(np.diff(rest) <= 1e-12)  # after the picks, least sure first


def test_margin_asks_first_about_the_images_between_two_classes():
    x, y = blobs()
    between = (x[0] + x[30]) / 2  # halfway between class 0 and class 1
    pool = np.concatenate([x, between[None]])
    order, scores, _, _ = rank_pool("margin", x, y, pool, 3, k=1)
    assert order[0] == len(x) and scores[0] > 0.5
    assert margin_scores(np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])).tolist() == [1.0, 0.0]


def test_coreset_and_typiclust_pick_the_cluster_that_has_no_label():
    x, y = blobs()
    labeled = x[y < 2][::5]  # classes 0 and 1 labeled, class 2 not
    picks, _ = coreset_picks(labeled, x, 1)
    assert y[picks[0]] == 2
    picks, typical = typiclust_picks(labeled, x, 1)
    assert y[picks[0]] == 2 and typical[0] > 0


def test_badge_distances_equal_those_of_the_materialised_gradient_embeddings():
    x, y = blobs(per=6)
    probs = fit_probe(x[::3], y[::3], 3)(x)
    a, feats = gradient_factors(x[::3], x, probs)
    g = np.einsum("nc,nd->ncd", a, feats).reshape(len(x), -1)  # the C x D embedding of each image
    sq_norms = (a * a).sum(1) * (feats * feats).sum(1)
    assert np.allclose(sq_norms, (g * g).sum(1))
    for j in (0, 7, len(x) - 1):
        assert np.allclose(gradient_sq_distances(a, feats, sq_norms, j), ((g - g[j]) ** 2).sum(1), atol=1e-9)
    assert np.all(a.argmax(1) != probs.argmax(1)) and np.allclose(a.sum(1), 0)  # p - onehot(argmax p)


def test_badge_asks_about_two_unsure_groups_not_twice_about_one():
    """Ten near-copies of an image between classes 0 and 1 (the least sure), ten of one between classes 1 and 2
    (less unsure), and six sure images: margin asks three times about the first copies; badge starts with them,
    then asks once about the other group and once about a sure image, whatever the seed; same seed, same picks."""
    x, y = blobs()
    rng = np.random.default_rng(1)
    c = [x[y == i].mean(0) for i in range(3)]
    copies = c[0] + c[1] + 0.05 * (c[0] - c[1]) + rng.normal(0, 0.01, (10, 8))
    other = c[1] + c[2] + 0.2 * (c[2] - c[1]) + rng.normal(0, 0.01, (10, 8))
    sure = np.concatenate([ci + rng.normal(0, 0.3, (2, 8)) for ci in c])
    pool = np.concatenate([copies, other, sure])
    group = np.repeat([0, 1, 2], [10, 10, 6])
    order, _, _, probs = rank_pool("margin", x, y, pool, 3, k=3)
    assert group[order[:3]].tolist() == [0, 0, 0]
    for seed in range(10):
        picks, dists = badge_picks(x, pool, probs, 3, seed)
        assert group[picks[0]] == 0 and sorted(group[picks].tolist()) == [0, 1, 2], (seed, picks)
        assert np.all(dists > 0) and badge_picks(x, pool, probs, 3, seed)[0].tolist() == picks.tolist()
    picks, _ = badge_picks(x, pool, probs, len(pool), 0)
    assert sorted(picks.tolist()) == list(range(len(pool)))  # past the distinct images too, each once
    twins = badge_picks(x, np.repeat(pool[:1], 4, 0), np.repeat(probs[:1], 4, 0), 4, 0)[0]
    assert sorted(twins.tolist()) == [0, 1, 2, 3]  # exact copies: no distance left to draw by


def write_pool(root: Path, per_color: int = 3) -> Path:
    for name, color in COLORS.items():
        for i in range(per_color):
            make_image(root / f"{name}_pool_{i}.png", color, seed=100 + i)
    make_image(root / "purple.png", (130, 40, 140), seed=7)  # between red and blue
    (root / "notes.txt").write_text("not an image")
    return root


def test_suggest_json_is_one_line_per_pool_image_in_rank_order(trained_run, tmp_path, capsys):
    pool = write_pool(tmp_path / "pool")
    assert main(["suggest", str(trained_run.path), "--pool", str(pool), "--k", "4", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(Path(r["path"]).name for r in lines) == sorted(p.name for p in pool.glob("*.png"))
    assert all(set(r) >= {"path", "score", "unknown", "unknown_score"} for r in lines)
    assert [r["picked"] for r in lines] == [True] * 4 + [False] * (len(lines) - 4)
    rest = [r["score"] for r in lines[4:]]
    assert rest == sorted(rest, reverse=True)


@pytest.mark.parametrize("method", ["coreset", "typiclust", "mix", "entropy", "badge"])
def test_suggest_takes_a_zip_pool_and_each_method(run_copy, tmp_path, capsys, method):
    pool = write_pool(tmp_path / "pool")
    shutil.copy(run_copy.path.parent.parent / "run-data" / "colors" / "red" / "red_0.png", pool / "copy.png")
    archive = shutil.make_archive(str(tmp_path / "pool"), "zip", pool)
    assert main(["suggest", str(run_copy.path), "--pool", archive, "--k", "3", "--method", method]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 4 and "pool images ranked" in out
    assert main(["suggest", str(run_copy.path), "--pool", archive, "--json", "--method", method]) == 0
    names = [Path(json.loads(line)["path"]).name for line in capsys.readouterr().out.splitlines()]
    assert len(names) == 10 and "copy.png" not in names  # a training image already has its label


def test_suggest_bad_input_is_one_sentence(trained_run, tmp_path, capsys):
    assert main(["suggest", str(trained_run.path), "--pool", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and "Traceback" not in err
    pool = write_pool(tmp_path / "pool")
    assert main(["suggest", str(trained_run.path), "--pool", str(pool), "--method", "magic"]) == 2
    assert "Unknown suggestion method 'magic'" in capsys.readouterr().err


def test_labels_from_a_round_become_a_derived_dataset_whose_run_names_the_round(run_copy, tmp_path):
    from core.analysis.suggest import labeled_dataset, suggest_for_run
    from core.data.dataset import open_dataset
    from core.engine.train import train
    pool = write_pool(tmp_path / "pool")
    picks = [r for r in suggest_for_run(run_copy.path, pool, k=3) if r.picked]
    labels = {r.path: Path(r.path).name.split("_")[0] for r in picks if not r.path.endswith("purple.png")}
    data, cfg = labeled_dataset(run_copy.path, labels, tmp_path / "derived")
    before = run_copy.read_summary().num_train
    assert len(open_dataset(data).train) == before + len(labels)
    result = train(cfg.replace(output_dir=str(tmp_path / "runs2"), epochs=1))
    lineage = result.summary.lineage
    assert lineage[-1].endswith(f"({len(labels)} labels from suggestions, labeling round 1)"), lineage
    # the next round counts on, and a pool image labeled already is not suggested again
    rows = suggest_for_run(result.run_dir, pool, k=2)
    assert not {r.path for r in rows} & set(labels)
    more = {r.path: "blue" for r in rows[:1]}
    data2, _ = labeled_dataset(result.run_dir, more, tmp_path / "derived")
    assert len(open_dataset(data2).train) == before + len(labels) + 1
    from core.data.derived import labeling_note
    assert labeling_note(data2) == f" (1 label from suggestions, labeling round 2, {len(labels) + 1} in all)"
    with pytest.raises(ValueError, match="Label at least one"):
        labeled_dataset(result.run_dir, {}, tmp_path / "derived")


def test_pool_images_unlike_every_class_are_flagged_and_the_rest_accepted():
    """The unknown-input score on the suggestions' features: a pool image far from all three classes is flagged (a
    candidate for a new class), pool images drawn like the labeled ones mostly are not (95% of validation kept)."""
    from core.analysis.suggest import unknown_scores
    x, y = blobs()
    val, _ = blobs(seed=1, per=20)
    pool, _ = blobs(seed=2, per=10)
    stranger = np.full((1, 8), -10.0)  # nowhere near any class
    far, flagged = unknown_scores(x, y, val, np.concatenate([pool, stranger]), 3)
    assert flagged[-1] and far[-1] == far.max()
    assert flagged[:-1].mean() <= 0.2
    _, none = unknown_scores(x, y, x[:0], stranger, 3)  # no validation images: no threshold, nothing flagged
    assert not none.any()


def test_pseudo_labels_join_only_sure_unanswered_images_and_auto_follows_the_bench():
    from core.analysis.suggest import Suggestion, pseudo_labels, use_pseudo_labels
    rows = [Suggestion("a.png", 0.1, True, "red", 0.95), Suggestion("b.png", 0.2, True, "blue", 0.97),
            Suggestion("c.png", 0.9, False, "green", 0.5),
            Suggestion("d.png", 0.3, False, "red", 0.99, unknown=True)]  # sure, but unlike every class
    assert pseudo_labels(rows, answered={"b.png"}) == {"a.png": "red"}
    assert use_pseudo_labels("auto", 0.8) and not use_pseudo_labels("auto", 0.4) and not use_pseudo_labels("auto", None)
    assert use_pseudo_labels("on", 0.1) and not use_pseudo_labels("off", 0.99)
    with pytest.raises(ValueError, match="auto, on or off"):
        use_pseudo_labels("maybe", 0.9)


def test_pseudo_labels_go_into_the_derived_dataset_and_the_lineage_note(run_copy, tmp_path):
    from core.analysis.suggest import labeled_dataset
    from core.data.dataset import open_dataset
    from core.data.derived import labeling_note
    pool = write_pool(tmp_path / "pool")
    labels = {str(pool / "red_pool_0.png"): "red"}
    pseudo = {str(pool / "blue_pool_0.png"): "blue", str(pool / "red_pool_0.png"): "blue"}  # the user's label wins
    data, _ = labeled_dataset(run_copy.path, labels, tmp_path / "derived", pseudo)
    train = open_dataset(data).train
    assert len(train) == run_copy.read_summary().num_train + 2
    assert labeling_note(data) == " (1 label from suggestions, labeling round 1, 1 pseudo-labels)"
