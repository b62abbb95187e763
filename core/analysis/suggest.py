"""Which pool images to label next: active-learning rankings on frozen features, in seconds.

Every method works on the pooled features of the run's pretrained backbone (cached per machine,
core/models/features.py) and a linear head fitted on the labels the run trained on, so the same code serves any
run and the label-savings bench (bench/labels.py), which calls the array functions directly:

- `margin`: smallest gap between the two likeliest classes first (uncertainty sampling);
- `entropy`: highest predictive entropy first;
- `coreset`: greedy k-center (Sener & Savarese 2018): each pick is the image farthest from every labeled or
  already picked image;
- `typiclust`: for very small budgets (Hacohen et al. 2022): k-means into (labeled + k) clusters, and from each of the
  largest clusters without a labeled image its most typical image (densest neighbourhood);
- `mix`: uncertainty and diversity (Zhdanov 2019): the MIX_POOL x k least sure images, clustered into k groups by
  k-means, the one nearest each centre;
- `badge`: uncertainty and diversity in one (Ash et al. 2020): k-means++ seeding over the gradients the probe's
  last layer would get if each image had the label it predicts (large for unsure images, alike for alike ones).

`rank` returns every pool image once: the k picks of the method first (in pick order), then the rest by margin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors

from core.analysis.linear import ridge_predict, standardise
from core.config import TrainConfig

METHODS = ("margin", "entropy", "coreset", "typiclust", "mix", "badge")
DEFAULT_METHOD = "coreset"  # the best on the six dev sets at both budgets (bench/labels.py, docs/measurements.md)
MIX_POOL = 10  # `mix` clusters the MIX_POOL x k least sure images
TYPICAL_NEIGHBOURS = 20  # TypiClust's typicality: inverse mean distance to this many nearest neighbours
PSEUDO_THRESHOLD = 0.9  # pool images the probe labels at least this sure become pseudo-labels
PSEUDO_AUTO_ACCURACY = 0.6  # `auto` adds pseudo-labels only for a model at least this accurate (bench/labels.py)
SCALE = 5.0  # ridge scores -> probabilities: a score gap of 1 (a one-hot target's) gives 0.94 among 10 classes


@dataclass(frozen=True)
class Suggestion:
    path: str
    score: float  # the method's value for the image: higher = asked first within the picks, then within the rest
    picked: bool  # one of the k the method chose (the rest follow by margin)
    predicted: str  # the probe's likeliest class
    confidence: float  # its probability
    unknown: bool = False  # unlike every class the run knows (a candidate for a new class; never a pseudo-label)
    unknown_score: float | None = None  # kNN distance to the labeled images (analysis/unknown.py): higher, less alike


def fit_probe(x: np.ndarray, y: np.ndarray, num_classes: int) -> Callable[[np.ndarray], np.ndarray]:
    """A linear probe on the labeled features: the ridge classifier of core/analysis/linear.py (closed form,
    milliseconds; 55.3% vs 56.7% for a logistic head on 100 labeled cifar10 images, at 0.16 s vs 4.3 s CPU), its
    class scores turned into probabilities by softmax(SCALE x scores). Returns rows -> N x num_classes
    probabilities."""
    def predict(rows: np.ndarray) -> np.ndarray:
        scores = SCALE * ridge_predict(x, y, num_classes, rows)
        e = np.exp(scores - scores.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    return predict


def margin_scores(probs: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2): 1 when the two likeliest classes tie, 0 when the model is sure."""
    top = np.sort(probs, axis=1)[:, -2:]
    return 1.0 - (top[:, 1] - top[:, 0])


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    return -(probs * np.log(np.clip(probs, 1e-12, None))).sum(1)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)


def coreset_picks(labeled: np.ndarray, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center on L2-normalised features: k pool indices and each one's distance when it was picked."""
    pool = _normalise(pool)
    if len(labeled):
        nearest = NearestNeighbors(n_neighbors=1).fit(_normalise(labeled)).kneighbors(pool)[0][:, 0]
    else:
        nearest = np.full(len(pool), np.inf)
    picks, dists = [], []
    for _ in range(min(k, len(pool))):
        i = int(np.argmax(nearest))
        picks.append(i)
        dists.append(float(nearest[i]) if np.isfinite(nearest[i]) else 2.0)
        nearest = np.minimum(nearest, np.linalg.norm(pool - pool[i], axis=1))
        nearest[i] = -1.0
    return np.array(picks, dtype=np.int64), np.array(dists)


def typiclust_picks(labeled: np.ndarray, pool: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """TypiClust: k pool indices (the most typical image of each of the largest clusters holding no labeled
    image) and their typicality."""
    pool_n = _normalise(pool)
    both = np.concatenate([_normalise(labeled), pool_n]) if len(labeled) else pool_n
    clusters = min(len(labeled) + k, len(both))
    assign = KMeans(clusters, n_init=1, random_state=seed).fit_predict(both)
    lab_assign, pool_assign = assign[:len(labeled)], assign[len(labeled):]
    neighbours = min(TYPICAL_NEIGHBOURS, len(pool_n) - 1)
    if neighbours > 0:
        dist = NearestNeighbors(n_neighbors=neighbours + 1).fit(pool_n).kneighbors(pool_n)[0][:, 1:]
        typical = 1.0 / (dist.mean(1) + 1e-8)
    else:
        typical = np.ones(len(pool_n))
    sizes = np.bincount(assign, minlength=clusters)
    covered = np.bincount(lab_assign, minlength=clusters) > 0
    order = sorted(range(clusters), key=lambda c: (covered[c], -sizes[c]))  # uncovered, largest first
    picks: list[int] = []
    for c in order * 2:  # a second pass over covered clusters when k exceeds the uncovered ones
        members = np.flatnonzero((pool_assign == c) & ~np.isin(np.arange(len(pool_n)), picks))
        if len(members) and len(picks) < k:
            picks.append(int(members[np.argmax(typical[members])]))
    return np.array(picks, dtype=np.int64), typical[picks]


def mix_picks(pool: np.ndarray, uncertainty: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The MIX_POOL x k least sure images clustered into k groups; from each, the image nearest its centre."""
    k = min(k, len(pool))
    candidates = np.argsort(-uncertainty, kind="stable")[:max(k, MIX_POOL * k)]
    feats = _normalise(pool[candidates])
    km = KMeans(k, n_init=1, random_state=seed).fit(feats)
    picks = []
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        if len(members):
            picks.append(int(candidates[members[np.argmin(np.linalg.norm(feats[members] - km.cluster_centers_[c],
                                                                          axis=1))]]))
    picks = sorted(set(picks), key=lambda i: -uncertainty[i])
    return np.array(picks, dtype=np.int64), uncertainty[picks]


def gradient_factors(labeled: np.ndarray, pool: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BADGE's gradient embedding of each pool image, g = a (x) x, kept as its two factors: a = p - onehot(argmax p)
    (N x C) and x, the probe's input (the features standardised as ridge_predict does, N x D)."""
    a = probs.astype(np.float64)
    a[np.arange(len(a)), a.argmax(1)] -= 1.0
    return a, standardise(labeled if len(labeled) else pool, pool)[1].astype(np.float64)


def gradient_sq_distances(a: np.ndarray, x: np.ndarray, sq_norms: np.ndarray, j: int) -> np.ndarray:
    """||g_i - g_j||^2 for every i without the C x D embeddings: |g_i|^2 + |g_j|^2 - 2 (a_i . a_j)(x_i . x_j)."""
    return np.clip(sq_norms + sq_norms[j] - 2.0 * (a @ a[j]) * (x @ x[j]), 0.0, None)


def badge_picks(labeled: np.ndarray, pool: np.ndarray, probs: np.ndarray, k: int,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """BADGE: k-means++ seeding over the gradient embeddings (one N x D and one N x C product per pick). The first
    pick is the largest gradient, each next one drawn (seeded) with probability proportional to its squared
    distance to the nearest pick. k pool indices and each one's gradient distance when it was picked."""
    a, x = gradient_factors(labeled, pool, probs)
    sq_norms = (a * a).sum(1) * (x * x).sum(1)
    rng = np.random.default_rng(seed)
    nearest = sq_norms.copy()  # distance to the zero gradient until the first pick
    picks: list[int] = []
    dists = []
    for _ in range(min(k, len(pool))):
        total = nearest.sum()
        if not picks:
            i = int(np.argmax(nearest))
        elif total > 0:
            i = int(rng.choice(len(pool), p=nearest / total))
        else:  # no image left differs from a pick: any of them
            i = int(rng.choice(np.setdiff1d(np.arange(len(pool)), picks)))
        picks.append(i)
        dists.append(float(np.sqrt(nearest[i])))
        d = gradient_sq_distances(a, x, sq_norms, i)
        nearest = d if len(picks) == 1 else np.minimum(nearest, d)
        nearest[picks] = 0.0
    return np.array(picks, dtype=np.int64), np.array(dists)


def rank_pool(method: str, labeled: np.ndarray, labels: np.ndarray, pool: np.ndarray, num_classes: int, k: int,
              seed: int = 0, probs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Every pool index once in the order to ask, each one's score, how many are the method's picks, and the
    probe's probabilities on the pool (`probs`: already computed by the caller)."""
    if method not in METHODS:
        raise ValueError(f"Unknown suggestion method '{method}'; choose one of: {', '.join(METHODS)}.")
    if probs is None:
        probs = fit_probe(labeled, labels, num_classes)(pool)
    margin = margin_scores(probs)
    k = min(k, len(pool))
    if method == "margin":
        picks, scores = np.argsort(-margin, kind="stable")[:k], None
    elif method == "entropy":
        ent = entropy_scores(probs)
        picks = np.argsort(-ent, kind="stable")[:k]
        scores = ent[picks]
    elif method == "coreset":
        picks, scores = coreset_picks(labeled, pool, k)
    elif method == "typiclust":
        picks, scores = typiclust_picks(labeled, pool, k, seed)
    elif method == "badge":
        picks, scores = badge_picks(labeled, pool, probs, k, seed)
    else:
        picks, scores = mix_picks(pool, margin, k, seed)
    if scores is None:
        scores = margin[picks]
    rest = np.setdiff1d(np.arange(len(pool)), picks)
    rest = rest[np.argsort(-margin[rest], kind="stable")]
    order = np.concatenate([picks, rest]).astype(np.int64)
    return order, np.concatenate([scores, margin[rest]]), len(picks), probs


def suggest_for_run(run_path: str | Path, pool_source: str | Path, k: int = 20, method: str = DEFAULT_METHOD,
                    extract_dir: str | Path | None = None, progress: Callable[[str, int, int], None] | None = None,
                    should_stop: Callable[[], bool] = lambda: False) -> list[Suggestion]:
    """Every usable image of the pool (folder or .zip), in the order to label them, for a finished run: features of
    the run's pretrained backbone (cached), a probe on the run's training labels, then `method`. A pool image that
    is byte for byte one of the run's training images is left out (it has a label already)."""
    from core.analysis.inspect import open_view
    from core.data.unlabeled import open_unlabeled
    from core.models.features import pretrained_features
    from core.runs import RunDir
    view = open_view(RunDir(Path(run_path)))
    train = view.dataset().train
    pool, _ = open_unlabeled(pool_source, extract_dir)

    def feats(samples, what):
        tick = (lambda d, t: progress(what, d, t)) if progress else None
        return pretrained_features(view.cfg, samples, exact=False, progress=tick, should_stop=should_stop)[0]

    train_f = feats(train, "features of the labeled images")
    pool_f = feats(pool, "features of the pool")
    val_f = feats(view.dataset().val, "features of the validation images")
    if should_stop():
        return []
    keep_t = [i for i, f in enumerate(train_f) if f is not None]
    seen = {train_f[i][0].tobytes() for i in keep_t}
    keep_p = [i for i, f in enumerate(pool_f) if f is not None and f[0].tobytes() not in seen]
    if not keep_p:
        raise ValueError(f"The pool {pool_source} has no usable image that is not already in the run's training set.")
    x = np.stack([train_f[i][0] for i in keep_t])
    y = np.array([train[i].label for i in keep_t])
    xp = np.stack([pool_f[i][0] for i in keep_p])
    order, scores, picked, probs = rank_pool(method, x, y, xp, len(view.classes), k, view.cfg.seed)
    xv = np.stack([f[0] for f in val_f if f is not None]) if any(f is not None for f in val_f) else x[:0]
    far, flagged = unknown_scores(x, y, xv, xp, len(view.classes))
    return [Suggestion(pool[keep_p[i]].path, float(s), r < picked, view.classes[int(probs[i].argmax())],
                       float(probs[i].max()), bool(flagged[i]), float(far[i]))
            for r, (i, s) in enumerate(zip(order, scores, strict=True))]


def unknown_scores(labeled: np.ndarray, labels: np.ndarray, val: np.ndarray, pool: np.ndarray,
                   num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The unknown-input score of each pool image (the product's default method, core/analysis/unknown.py) on the
    same pretrained features the suggestions use: fitted on the labeled images, thresholded so that 95% of the
    run's validation images are accepted (no validation image: nothing is flagged). (scores, flagged)."""
    from core.analysis.unknown import DEFAULT_METHOD as UNKNOWN_METHOD
    from core.analysis.unknown import accept_threshold, fit_scorer, scores
    scorer = fit_scorer(UNKNOWN_METHOD, labeled, labels, num_classes)
    no_logits = np.zeros((len(pool), num_classes), np.float32)  # the kNN distance reads the features only
    far = scores(scorer, no_logits, pool)
    if not len(val):
        return far, np.zeros(len(pool), bool)
    threshold = accept_threshold(scores(scorer, np.zeros((len(val), num_classes), np.float32), val))
    return far, far > threshold


def use_pseudo_labels(mode: str, val_accuracy: float | None) -> bool:
    """`on`, `off`, or `auto`: on where the label-savings bench found self-training to help, a model at least
    PSEUDO_AUTO_ACCURACY accurate (below 50% it added nothing on average, from 60% +1 to +3 points)."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"Pseudo-labels must be auto, on or off, not '{mode}'.")
    return mode == "on" or (mode == "auto" and (val_accuracy or 0.0) >= PSEUDO_AUTO_ACCURACY)


def pseudo_labels(rows: list[Suggestion], answered: set[str]) -> dict[str, str]:
    """Pool images the probe labels with confidence >= PSEUDO_THRESHOLD, not answered by the user (a skipped or
    "none of these" image is left out too) and not unlike every class (the unknown-input score keeps images of no
    class out, however sure the probe is): image file -> predicted class."""
    return {r.path: r.predicted for r in rows
            if r.confidence >= PSEUDO_THRESHOLD and not r.unknown and r.path not in answered}


def labeled_dataset(run_path: str | Path, labels: dict[str, str], dest: str | Path,
                    pseudo: dict[str, str] | None = None) -> tuple[Path, TrainConfig]:
    """The run's dataset plus the pool images labeled this round (image file -> class) in train, and `pseudo`
    (pseudo-labeled pool images) with them, as a derived dataset under dest (hard links, the run's split), and the
    run's config on it: what "train again" starts. The round is counted on from the run's own dataset when that
    came from an earlier round."""
    from core.analysis.inspect import open_view
    from core.data.derived import derive_dataset, labeling_of
    from core.runs import RunDir
    if not labels:
        raise ValueError("Label at least one suggested image before training again.")
    view = open_view(RunDir(Path(run_path)))
    ds = view.dataset()
    before = labeling_of(ds.root) or {}
    labeling = {"round": before.get("round", 0) + 1, "labels": len(labels),
                "total": before.get("total", 0) + len(labels), "run": view.run.run_id,
                "pseudo": len(set(pseudo or {}) - set(labels))}
    out = derive_dataset(ds, Path(dest), set(), {}, add={**(pseudo or {}), **labels}, labeling=labeling)
    return out, view.cfg.replace(data=str(out))


def suggestions_to_dicts(rows: list[Suggestion]) -> list[dict]:
    return [asdict(r) for r in rows]
