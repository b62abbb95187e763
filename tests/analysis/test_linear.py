"""The probe's logistic-regression candidate head (core/analysis/linear.py): scikit-learn's objective solved with
torch's L-BFGS, its strength chosen on validation; and what a probe run says about the head it delivered."""

import numpy as np
from sklearn.linear_model import LogisticRegression

from core.analysis.linear import logistic_head
from core.config import TrainConfig
from core.engine.train import train


def blobs(n: int, classes: int, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (classes, dims))
    y = rng.integers(0, classes, n)
    return centres[y] + rng.normal(0, 2.0, (n, dims)), y


def test_logistic_head_matches_scikit_learn_at_the_strength_it_chooses():
    x, y = blobs(300, 4, 40, seed=0)
    vx, vy = blobs(200, 4, 40, seed=1)
    c, acc, w, b = logistic_head(x, y, vx, vy, classes=5)  # class 4 has no training image
    ref = LogisticRegression(C=c, max_iter=5000, tol=1e-8).fit(x, y)
    ours = (vx @ w.T + b).argmax(1)
    assert (ours == ref.predict(vx)).mean() >= 0.98
    assert acc == (ours == vy).mean() and 4 not in set(ours)
    assert np.allclose(w[:4], ref.coef_, atol=0.05 * np.abs(ref.coef_).max())


def test_a_probe_run_names_the_head_it_delivered(tiny_folder, tmp_path):
    result = train(TrainConfig(data=str(tiny_folder), freeze="probe", epochs=3, weights="random",
                               output_dir=str(tmp_path), img_size=64))
    notes = [n for n in result.summary.notes if n.startswith("Probe head:")]
    assert len(notes) == 1 and "logistic regression" in notes[0] and "validation" in notes[0]
