"""Is this one of the trained products at all? Distance to the nearest training images in feature space."""
from __future__ import annotations

import numpy as np


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class NearestNeighbourNovelty:
    """Score = 1 - cosine similarity to the k-th nearest reference image (deep k-NN, Sun et al. 2022).

    Products never trained on, blank tables and other objects land far from every training image even when
    the softmax is confident; the threshold is set on held-out images of known products.
    """

    def __init__(self, k: int = 5, quantile: float = 0.99):
        self.k, self.quantile = k, quantile

    def fit(self, reference: np.ndarray, held_out: np.ndarray) -> "NearestNeighbourNovelty":
        """Remember `reference` features (float16, as saved); the threshold keeps `quantile` of `held_out`."""
        self.reference_ = _normalise(reference).astype(np.float16)
        scores = self.score(held_out)
        self.threshold_ = float(np.quantile(scores, self.quantile)) if len(scores) else 1.0
        return self

    def extend(self, features: np.ndarray) -> "NearestNeighbourNovelty":
        """Add reference images (e.g. an enrolled product's pictures) without moving the threshold."""
        self.reference_ = np.vstack([self.reference_, _normalise(features).astype(np.float16)])
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        if not len(features) or not len(self.reference_):
            return np.zeros(len(features))
        sims = _normalise(features) @ self.reference_.T.astype(np.float32)
        k = min(self.k, sims.shape[1])
        kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]
        return 1.0 - kth.astype(np.float64)

    def is_novel(self, features: np.ndarray) -> np.ndarray:
        return self.score(features) > self.threshold_
