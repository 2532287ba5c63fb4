"""Classes known from their cards alone: image prototypes scored on the image branch's own logit scale."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.special import logsumexp


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def prototype(features: np.ndarray) -> np.ndarray:
    """One class's prototype: the mean direction of its reference images' features."""
    return normalise(normalise(features).mean(0))


def cosine(features: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """(n, n_prototypes) cosine similarity."""
    return normalise(features) @ normalise(prototypes).T if len(prototypes) else np.zeros((len(features), 0))


def background_stats(prototypes: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(n_prototypes, 2): mean and spread of each prototype's similarity to photos of other products."""
    cos = cosine(background, prototypes)
    return np.stack([cos.mean(0), np.maximum(cos.std(0), 1e-6)], axis=1) if len(cos) else np.zeros((0, 2))


def similarity(features: np.ndarray, prototypes: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """Cosine to each prototype in units of its spread above its background mean: a prototype of shop photos
    is near every shop photo, a studio picture near none, and this puts both on one footing."""
    return (cosine(features, prototypes) - stats[:, 0]) / stats[:, 1]


def as_enrolled(logp: np.ndarray, k: int, score: np.ndarray) -> np.ndarray:
    """A branch's log-probabilities as if class `k` had been enrolled, not trained: the others renormalised
    without it (what a branch that never learned it says), `k` given its enrolled `score` (as in
    `fit_enrol_scale`)."""
    out = np.asarray(logp, np.float64).copy()
    others = np.arange(out.shape[1]) != k
    out[:, others] = out[:, others] - logsumexp(out[:, others], axis=1, keepdims=True)
    out[:, k] = score
    return out - logsumexp(out, axis=1, keepdims=True)


def fit_enrol_scale(logits: np.ndarray, scores: np.ndarray, y: np.ndarray, pretend: Sequence[int]
                    ) -> tuple[float, float]:
    """Scale and shift that put an enrolled class's score (picture similarity, card-text match) on the
    branch's own logit scale, so it competes fairly with the trained classes.

    Fitted by pretending, on held-out images, that each class in `pretend` had been enrolled: the branch's
    log-probabilities of the other classes are renormalised without it (what a branch that never learned it
    would say: its photos go to the nearest trained classes), its own is scale * `scores[:, j]` + shift (the
    score it gets as an enrolled class, for `pretend[j]`), and the likelihood of the true labels is maximised.
    """
    if not len(pretend) or not len(y):
        return 1.0, 0.0
    z = torch.as_tensor(logits, dtype=torch.float64)
    s = torch.as_tensor(np.asarray(scores, np.float64))
    target = torch.as_tensor(y, dtype=torch.long)
    params = torch.tensor([1.0, -float(np.log(z.shape[1]))], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = 0
        for j, k in enumerate(pretend):
            others = torch.arange(z.shape[1]) != k
            zk = z.clone()
            zk[:, others] = torch.log_softmax(z[:, others], dim=1)
            zk[:, k] = params[0] * s[:, j] + params[1]
            loss = loss + torch.nn.functional.cross_entropy(zk, target)
        loss = loss / len(pretend)
        loss.backward()
        return loss

    opt.step(closure)
    scale, shift = params.detach().tolist()
    return float(scale), float(shift)
