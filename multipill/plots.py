"""Figures people would rather look at than tables: confusion matrices, training curves, branch bars."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def confusion_png(cm: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, title: str) -> Path:
    m = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(classes), 1 + 0.55 * len(classes)))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    for i in range(len(m)):
        for j in range(len(m)):
            if m[i, j]:
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def history_png(history: Sequence[dict], path: str | Path) -> Path:
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(epochs, [h["train_loss"] for h in history], label="train")
    a.plot(epochs, [h["val_loss"] for h in history], label="validation")
    a.set_xlabel("epoch")
    a.set_ylabel("cross-entropy")
    a.legend()
    b.plot(epochs, [h["val_accuracy"] for h in history])
    b.set_xlabel("epoch")
    b.set_ylabel("validation accuracy")
    return _save(fig, path)


def branches_png(scores: dict[str, float], path: str | Path, title: str,
                 intervals: dict[str, tuple[float, float]] | None = None) -> Path:
    """Accuracy per branch (image-only, text-only, fused), with optional 95% intervals."""
    names = list(scores)
    values = [scores[n] for n in names]
    err = None
    if intervals:
        err = np.array([[scores[n] - intervals[n][0], intervals[n][1] - scores[n]] for n in names]).T
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(names, values, yerr=err, capsize=4, color=["#4878d0", "#ee854a", "#6acc64"][:len(names)])
    for i, v in enumerate(values):
        ax.text(i, v + 0.01, f"{v:.3f}", ha="center", fontsize=9)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    return _save(fig, path)


def reliability_png(report: dict, path: str | Path, title: str = "reliability of the answer") -> Path:
    """Accuracy against confidence per bin, before and after temperature scaling (diagonal = calibrated)."""
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, 1], [0, 1], ":", color="grey")
    for when, style in (("before", "o--"), ("after", "s-")):
        bins = report[f"reliability_{when}"]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], style,
                label=f"{when} (ECE {report[f'ece_{when}']:.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def risk_coverage_png(abstention: dict, path: str | Path, title: str = "risk-coverage") -> Path:
    """Error rate among answered cases as more are answered; the model's operating point marked."""
    curve = abstention["risk_coverage"]
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    ax.plot(curve["coverage"], curve["risk"])
    if abstention["answered_accuracy"] is not None:
        ax.plot([abstention["coverage"]], [1 - abstention["answered_accuracy"]], "o", color="red",
                label=f"threshold {abstention['threshold']:.3f}")
        ax.legend(fontsize=8)
    ax.set_xlabel("coverage (share answered)")
    ax.set_ylabel("error rate on answered")
    ax.set_title(title)
    return _save(fig, path)
