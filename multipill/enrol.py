"""Classes known from their cards alone: image prototypes scored on the image branch's own logit scale."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def prototype(features: np.ndarray) -> np.ndarray:
    """One class's prototype: the mean direction of its reference images' features."""
    return normalise(normalise(features).mean(0))


def prototype_logits(features: np.ndarray, prototypes: np.ndarray, scale: Sequence[float]) -> np.ndarray:
    """Logits of enrolled classes: scale * cosine similarity to their prototype + shift."""
    if not len(prototypes):
        return np.zeros((len(features), 0))
    return scale[0] * normalise(features) @ normalise(prototypes).T + scale[1]


def fit_prototype_scale(logits: np.ndarray, features: np.ndarray, y: np.ndarray, prototypes: np.ndarray,
                        pretend: Sequence[int]) -> tuple[float, float]:
    """Scale and shift that make a prototype's logit compete fairly with the trained head's logits.

    Fitted by pretending, on held-out images, that each class in `pretend` had been enrolled: its head
    logit is replaced by its prototype's (`prototypes[j]` for class `pretend[j]`, built from what an enrolled
    class would have: its card's pictures) and the likelihood of the true labels is maximised.
    """
    if not len(pretend) or not len(y):
        return 10.0, 0.0
    z = torch.as_tensor(logits, dtype=torch.float64)
    cos = torch.as_tensor(normalise(features) @ normalise(prototypes).T)  # (n, len(pretend))
    target = torch.as_tensor(y, dtype=torch.long)
    params = torch.tensor([10.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = 0
        for j, k in enumerate(pretend):
            zk = z.clone()
            zk[:, k] = params[0] * cos[:, j] + params[1]
            loss = loss + torch.nn.functional.cross_entropy(zk, target)
        loss = loss / len(pretend)
        loss.backward()
        return loss

    opt.step(closure)
    s, t = params.detach().tolist()
    return float(s), float(t)
