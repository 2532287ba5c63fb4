"""Classification reports for each branch, side by side, with errors inside confusable groups."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def report(y: np.ndarray, logp: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, log loss, per-class and averaged precision/recall/F1, confusion matrix (rows: truth)."""
    labels = list(range(len(classes)))
    pred = logp.argmax(1)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    out = {"accuracy": float((y == pred).mean()) if len(y) else 0.0, "n": int(len(y)),
           "log_loss": float(-logp[np.arange(len(y)), y].mean()) if len(y) else 0.0,
           "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                             "support": int(s[i])} for i, c in enumerate(classes)},
           "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist()}
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(y, pred, labels=labels, average=avg, zero_division=0)
        out[avg] = {"precision": float(ap), "recall": float(ar), "f1": float(af)}
    return out


def group_errors(y: np.ndarray, pred: np.ndarray, classes: Sequence[str],
                 groups: Sequence[Sequence[str]]) -> list[dict]:
    """For each group of lookalikes: images of the group, and how many were named as another member."""
    out = []
    for group in groups:
        ids = [classes.index(c) for c in group if c in classes]
        if len(ids) < 2:
            continue
        inside = np.isin(y, ids)
        within = inside & np.isin(pred, ids) & (pred != y)
        out.append({"group": [classes[i] for i in ids], "n": int(inside.sum()),
                    "errors_within_group": int(within.sum()),
                    "error_rate_within_group": float(within.sum() / max(inside.sum(), 1))})
    return out


def branch_report(y: np.ndarray, logp: np.ndarray, classes: Sequence[str],
                  groups: Sequence[Sequence[str]]) -> dict:
    """`report` plus lookalike-group errors and the per-image predictions, for one branch."""
    pred = logp.argmax(1)
    out = report(y, logp, classes)
    out["groups"] = group_errors(y, pred, classes, groups)
    out["y_pred"] = pred.tolist()
    return out


def most_confused(cm: Sequence[Sequence[int]], classes: Sequence[str], k: int = 5) -> list[list[str]]:
    """The k class pairs with the most mistakes between them (either direction)."""
    m = np.asarray(cm)
    pairs = [((m[i, j] + m[j, i]), i, j) for i in range(len(m)) for j in range(i + 1, len(m))]
    return [[classes[i], classes[j]] for n, i, j in sorted(pairs, reverse=True)[:k] if n > 0]
