"""A 2-D map of images by the features the model pooled, for spotting clusters, outliers and mistakes.

t-SNE (scikit-learn, PCA-initialised, after PCA to 50 dimensions) keeps neighbourhoods: images the model finds
alike sit together, which is what a person looks for (a mistake inside the other class's cluster). PCA alone
is linear and on these features mostly shows the two or three largest directions, blurring classes together;
UMAP would need another dependency for a similar picture. Above MAX_POINTS images a seeded sample is mapped.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

MAX_POINTS = 3000


def embed_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """N x 2 coordinates (t-SNE; PCA when there are too few images for t-SNE's neighbourhoods)."""
    n = len(features)
    if n < 3:
        return np.zeros((n, 2))
    x = features.astype(np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    dims = min(50, n - 1, x.shape[1])
    x = PCA(dims, random_state=seed).fit_transform(x)
    if n < 10:
        return x[:, :2] if dims >= 2 else np.c_[x, np.zeros(n)]
    perplexity = float(min(30.0, (n - 1) / 3))
    # one OpenMP thread: t-SNE's threads spin-wait against the app's other threads (training, Grad-CAM); on a loaded
    # 2-core machine 16 points took 110 s with the default threads and 1.4 s with one (tests21 note, docs/decisions.md)
    with threadpool_limits(1):
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed, max_iter=750).fit_transform(x)


def sample_indices(n: int, limit: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
