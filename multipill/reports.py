"""What a fitted model reports about its confidence: calibration error, abstention thresholds and coverage."""
from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np

from .calibration import expected_calibration_error, reliability_bins, risk_coverage, to_probability


def calibration_report(y: np.ndarray, cases: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                       temperatures: dict[str, float]) -> dict[str, Any]:
    """Expected calibration error and reliability bins before and after temperature scaling, for each of `cases`:
    name -> (log-probs before, log-probs after, rows it answers)."""
    out: dict[str, Any] = {"temperatures": dict(temperatures)}
    for name, (before, after, rows) in cases.items():
        if not rows.any():
            continue
        out[name] = {"n": int(rows.sum())}
        for when, lp in (("before", before[rows]), ("after", after[rows])):
            conf, correct = np.exp(lp.max(1)), lp.argmax(1) == y[rows]
            out[name][f"ece_{when}"] = expected_calibration_error(conf, correct)
            out[name][f"reliability_{when}"] = reliability_bins(conf, correct)
    return out


def threshold_report(sure: np.ndarray, correct: np.ndarray, limit: np.ndarray, named_new: np.ndarray,
                     target_accuracy: float, abstain_threshold: Optional[float], enrolled_threshold: float,
                     enrolled: list[str]) -> dict[str, Any]:
    """Where the thresholds came from and what they answer on validation (each answer held to its `limit`);
    warns when they answer nothing."""
    answered = sure >= limit
    report: dict[str, Any] = {"chosen_by": "target_accuracy" if abstain_threshold is None else "abstain_threshold",
                              "validation_n": int(len(sure)),
                              "validation_coverage": float(answered.mean()) if len(sure) else 0.0,
                              "enrolled_threshold": to_probability(enrolled_threshold),
                              "answers_naming_enrolled": int(named_new.sum()),
                              "with_enrolled": list(enrolled), "withhold_all_reason": None}
    if len(sure) and not answered.any():
        if abstain_threshold is None:
            best = 1 - min(risk_coverage(sure, correct)["risk"])
            reason = (f"no confidence threshold reached target_accuracy={target_accuracy} on the {len(sure)} "
                      f"validation images (best accuracy at any coverage {best:.3f}); add validation images or "
                      "lower target_accuracy")
        else:
            reason = (f"abstain_threshold={abstain_threshold} is above the confidence of every one of the "
                      f"{len(sure)} validation answers; lower it")
        report["withhold_all_reason"] = reason
        warnings.warn(f"this model will withhold every answer: {reason}")
    return report


def abstention_report(y: np.ndarray, out: dict[str, Any], threshold: float, enrolled_threshold: float,
                      novelty_threshold: float, withhold_all_reason: Optional[str]) -> dict[str, Any]:
    """Coverage and accuracy on the answered cases at the model's thresholds, and the whole curve."""
    correct = out["final"].argmax(1) == y
    answered = ~out["abstained"]
    curve = risk_coverage(out["certainty"], correct)
    step = max(1, len(y) // 200)
    return {"threshold": to_probability(threshold), "certainty_threshold": float(threshold),
            "enrolled_threshold": to_probability(enrolled_threshold),
            "novelty_threshold": float(novelty_threshold),
            "coverage": float(answered.mean()), "n_answered": int(answered.sum()),
            "answered_accuracy": float(correct[answered].mean()) if answered.any() else None,
            "abstained_as_novel": int((out["novelty"] > novelty_threshold).sum()),
            "withhold_all_reason": withhold_all_reason,
            "risk_coverage": {k: v[::step] for k, v in curve.items()}}
