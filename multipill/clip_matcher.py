"""Zero-shot image-text matching with open_clip: a photo scored against each card's words and pictures."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .cards import ProductCard, card_pictures
from .hub import require_hub

OFFLINE_ALTERNATIVE = ("Pass pretrained='/path/to/open_clip_weights.safetensors' (a local file), pretrained=False "
                       "(random weights, for tests), or use the OCR card matcher ('card_text'), which needs no "
                       "download.")


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


class ClipCardMatcher:
    """Cosine similarity of a photo's CLIP embedding to each card's text prompt and to its pictures.

    `pretrained`: an open_clip tag (downloaded from the hub when online; offline it fails at once naming the
    alternatives), a local .safetensors file (no pickle), or False for random weights.
    """

    name = "openclip"

    def __init__(self, model: str = "ViT-B-32", pretrained: str | bool = "laion2b_s34b_b79k",
                 picture_weight: float = 0.5, batch_size: int = 16):
        self.model, self.pretrained = model, pretrained
        self.picture_weight, self.batch_size = picture_weight, batch_size
        self._net = None

    def _load(self) -> None:
        import open_clip
        local = isinstance(self.pretrained, str) and Path(self.pretrained).suffix == ".safetensors"
        if local and not Path(self.pretrained).is_file():
            raise FileNotFoundError(f"{self.pretrained}: no such open_clip weights file")
        tag = self.pretrained if isinstance(self.pretrained, str) and not local else None
        if tag:
            require_hub(f"open_clip weights {self.model}/{tag}", OFFLINE_ALTERNATIVE)
        net, _, preprocess = open_clip.create_model_and_transforms(self.model, pretrained=tag)
        if local:
            from safetensors.torch import load_file
            net.load_state_dict(load_file(str(self.pretrained)))
        self._net, self._preprocess = net.eval(), preprocess
        self._tokenizer = open_clip.get_tokenizer(self.model)

    def _encode_images(self, images: Sequence) -> torch.Tensor:
        out = []
        for i in range(0, len(images), self.batch_size):
            x = torch.stack([self._preprocess(im) for im in images[i:i + self.batch_size]])
            with torch.no_grad():
                out.append(_unit(self._net.encode_image(x)))
        return torch.cat(out) if out else torch.zeros((0, 1))

    def fit(self, cards: dict[str, ProductCard]) -> "ClipCardMatcher":
        """Embed each card's prompt (its label and printed names) and the mean of its pictures."""
        if self._net is None:
            self._load()
        self.classes_ = list(cards)
        prompts = [f"a photo of {' '.join(cards[c].printed_text().split())}" for c in self.classes_]
        with torch.no_grad():
            self.text_embeddings_ = _unit(self._net.encode_text(self._tokenizer(prompts)))
        pictures = []
        for c in self.classes_:
            emb = self._encode_images(card_pictures(cards[c]))
            pictures.append(_unit(emb.mean(0)) if len(emb) else torch.zeros(self.text_embeddings_.shape[1]))
        self.picture_embeddings_ = torch.stack(pictures)
        return self

    def scores(self, images: Sequence, classes: Optional[Sequence[str]] = None) -> np.ndarray:
        """(n_images, n_classes) similarity: text cosine, mixed with the picture cosine where a card has pictures."""
        classes = list(classes or self.classes_)
        rows = [self.classes_.index(c) for c in classes]
        emb = self._encode_images(list(images))
        text = emb @ self.text_embeddings_[rows].T
        pics = self.picture_embeddings_[rows]
        has_picture = pics.abs().sum(1) > 0
        mixed = (1 - self.picture_weight) * text + self.picture_weight * (emb @ pics.T)
        return torch.where(has_picture[None, :], mixed, text).numpy()
