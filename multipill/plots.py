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
