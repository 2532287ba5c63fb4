"""Why the model answered: a Grad-CAM heatmap of the image branch with the OCR text the text branch used."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from .ocr import TextPiece


@dataclass
class Explanation:
    """Grad-CAM `heatmap` (HxW in [0, 1], the image's size) for class `label`, plus what the text did.

    `image_probability` is the image branch's calibrated probability of `label`, `answer_probability` the
    final (fused) one; their difference `text_shift` is how much the read text moved the answer.
    """

    image: Image.Image
    heatmap: np.ndarray
    label: str
    image_probability: float
    answer_probability: float
    pieces: list[TextPiece] = field(default_factory=list)
    text_used: bool = False

    @property
    def text_shift(self) -> float:
        return self.answer_probability - self.image_probability

    def save(self, path: str | Path | BinaryIO, alpha: float = 0.45) -> Path | BinaryIO:
        """PNG (to a path or a binary file): the photo, the heatmap over it, the OCR boxes with their text, and a
        caption."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Polygon

        fig, ax = plt.subplots(figsize=(6, 6 * self.image.height / max(self.image.width, 1) + 0.6))
        ax.imshow(self.image)
        ax.imshow(self.heatmap, cmap="jet", alpha=alpha, vmin=0, vmax=1)
        colour = "lime" if self.text_used else "white"
        for piece in self.pieces:
            ax.add_patch(Polygon(piece.box, closed=True, fill=False, edgecolor=colour, linewidth=1.5))
            x, y = min(p[0] for p in piece.box), min(p[1] for p in piece.box)
            ax.text(x, y - 2, f"{piece.text} ({piece.confidence:.2f})", color="black", fontsize=7,
                    bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "edgecolor": "none"})
        if self.text_used:
            text = f"text moved p({self.label}) by {self.text_shift:+.3f}"
        else:
            text = "no text used" if not self.pieces else "text read but not used (fusion off)"
        ax.set_title(f"{self.label}: image {self.image_probability:.3f} -> answer {self.answer_probability:.3f}"
                     f"\n{text}", fontsize=9)
        ax.axis("off")
        fig.tight_layout()
        fig.savefig(path, dpi=110, format="png")
        plt.close(fig)
        return Path(path) if isinstance(path, (str, Path)) else path


def pointing_game(heatmap: np.ndarray, mask: np.ndarray) -> tuple[bool, float]:
    """(is the heatmap's peak on the object?, share of heatmap energy inside the object's mask)."""
    peak = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    total = float(heatmap.sum())
    return bool(mask[peak]), float(heatmap[mask].sum() / total) if total > 0 else 0.0
