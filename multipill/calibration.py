"""Confidence that means what it says: temperature scaling, calibration error, abstention threshold."""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from .text import log_softmax


def apply_temperature(logp: np.ndarray, temperature: float) -> np.ndarray:
    """Log-probabilities with every logit divided by `temperature` (>1 softens, <1 sharpens)."""
    return log_softmax(np.asarray(logp, np.float64) / temperature)


def fit_temperature(logp: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the held-out Brier score; 1.0 without data.

    Brier rather than log-loss (Guo et al. 2017 use log-loss): on the small validation sets this library
    meets, one confidently wrong image dominates the log-loss and drags the temperature up until every answer
    looks unsure; each image's Brier score is bounded, so a few outliers cannot.
    """
    y = np.asarray(y)
    if not len(y):
        return 1.0
    onehot = np.eye(logp.shape[1])[y]

    def brier(log_t: float) -> float:
        return float(((np.exp(apply_temperature(logp, np.exp(log_t))) - onehot) ** 2).sum(1).mean())

    res = minimize_scalar(brier, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    conf, ok = np.asarray(confidence, float), np.asarray(correct, float)
    if not len(conf):
        return 0.0
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return float(sum(abs(ok[which == b].mean() - conf[which == b].mean()) * (which == b).sum()
                     for b in range(bins) if (which == b).any()) / len(conf))


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> list[dict]:
    """Per bin: mean confidence, accuracy and count (the reliability diagram's data)."""
    conf, ok = np.asarray(confidence, float), np.asarray(correct, float)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return [{"low": b / bins, "high": (b + 1) / bins, "confidence": float(conf[which == b].mean()),
             "accuracy": float(ok[which == b].mean()), "count": int((which == b).sum())}
            for b in range(bins) if (which == b).any()]


def risk_coverage(confidence: np.ndarray, correct: np.ndarray, weight: Optional[np.ndarray] = None
                  ) -> dict[str, list[float]]:
    """Answering the k most confident cases, k = 1..n: coverage, error rate among them, threshold.

    `weight`: how much each case counts (cases standing for more or fewer photos than one); equal by default.
    """
    order = np.argsort(-np.asarray(confidence, float), kind="stable")
    ok = np.asarray(correct, float)[order]
    w = np.ones(len(ok)) if weight is None else np.asarray(weight, float)[order]
    k = np.cumsum(w)
    total = k[-1] if len(k) else 1.0
    return {"coverage": (k / total).tolist(), "risk": (1 - np.cumsum(ok * w) / k).tolist(),
            "threshold": np.asarray(confidence, float)[order].tolist()}


def certainty(logp: np.ndarray) -> np.ndarray:
    """-log(1 - top probability) in nats, from the other classes' log-probabilities.

    Orders answers as the top probability does, but keeps saturated ones apart (1 - 1e-20 and 1 - 1e-9 both
    round to 1.0): otherwise one confident mistake on validation ties with every sure answer and the
    threshold has to refuse them all.
    """
    lp = np.asarray(logp, np.float64)
    others = np.where(np.arange(lp.shape[1]) == lp.argmax(1)[:, None], -np.inf, lp)
    with np.errstate(divide="ignore"):
        return -logsumexp(others, axis=1)


def to_certainty(probability: float) -> float:
    """A top-probability threshold as a certainty threshold (probability >= 1: refuse everything)."""
    return float(-np.log1p(-probability)) if probability < 1 else float("inf")


def to_probability(certainty_nats: float) -> float:
    """A certainty threshold back as the top probability it stands for (what people read)."""
    return float(-np.expm1(-certainty_nats))


def choose_threshold(confidence: np.ndarray, correct: np.ndarray, target_accuracy: float,
                     weight: Optional[np.ndarray] = None) -> float:
    """Lowest threshold on a confidence score (probability or certainty) reaching `target_accuracy` held out.

    Ties are kept together (a threshold answers every case at or above it). When no threshold reaches
    the target, the result is infinite: abstain on everything, including answers surer than any held out.
    """
    conf = np.asarray(confidence, float)
    if not len(conf):
        return 0.0
    curve = risk_coverage(conf, correct, weight)
    thresholds, risk = np.array(curve["threshold"]), np.array(curve["risk"])
    last_of_tie = np.r_[thresholds[1:] != thresholds[:-1], True]
    ok = np.flatnonzero(last_of_tie & (1 - risk >= target_accuracy - 1e-12))
    return float(thresholds[ok[-1]]) if len(ok) else float("inf")


def choose_ocr_gate(image_sure: np.ndarray, image_correct: np.ndarray, answer_correct: np.ndarray) -> float:
    """Loosest image certainty above which text need not be read: the answer there is the image branch's.

    Photos are skipped from the surest down until the first held-out photo whose text puts the image branch's
    wrong answer right; infinite when the surest photo already needs its text. No photo is lost on any subset of
    the skipped photos, so the gate still loses none where the familiarity limit reads some of them; a gate that
    only balanced fixes against breaks lost photos there (drug-vision held-out 0.700 against 0.713 read).
    """
    sure = np.asarray(image_sure, float)
    if not len(sure):
        return float("inf")
    order = np.argsort(-sure, kind="stable")
    needs_text = ~np.asarray(image_correct, bool)[order] & np.asarray(answer_correct, bool)[order]
    cut = np.r_[sure[order][1:] < sure[order][:-1], True]  # a gate keeps tied photos together
    lost = np.flatnonzero(needs_text)
    safe = np.flatnonzero(cut[:lost[0]] if len(lost) else cut)
    return float(sure[order][safe[-1]]) if len(safe) else float("inf")
