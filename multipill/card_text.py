"""Zero-shot text knowledge: OCR text scored against each class's product-card text, no photo needed."""
from __future__ import annotations

import copy
import re
from collections import Counter
from typing import Optional, Sequence

import numpy as np

from .cards import ProductCard
from .text import deaccent, fold

MIN_TOKEN = 3  # shorter words ("ml", "1l") say little about which product it is


def tokens(text: str) -> list[str]:
    """Distinct words, folded (diacritics dropped, OCR-confusable glyphs collapsed), and percentages.

    Numbers alone (prices, dates, batch codes) are dropped; a percentage such as "1,5 %" is kept as "1.5%",
    since strengths and fat contents often are all that tells two variants apart.
    """
    text = deaccent(text).lower()
    percents = {f"{a}.{b or 0}%" for a, b in re.findall(r"(?<![\d.,])(\d{1,3})(?:[.,](\d))?\s*%", text)}
    words = {fold(w).strip() for w in re.findall(r"[a-z0-9]+", text) if re.search("[a-z]", w)}
    return sorted(percents | {w for w in words if len(w) >= MIN_TOKEN and " " not in w})


def frequent_words(texts: Sequence[str], labels: Sequence, share: float = 1 / 3) -> dict:
    """Per label, the words read on at least `share` of its photos that have any text: what a class without a
    card shows on every pack (its name, its form, "tablet"), so that a word on a new product's card which the
    trained products' packs show too is not taken for evidence of the new one."""
    seen: dict = {}
    for text, label in zip(texts, labels):
        words = tokens(text)
        if words:
            seen.setdefault(label, []).append(set(words))
    return {label: sorted(w for w in set().union(*bags) if sum(w in b for b in bags) >= share * len(bags))
            for label, bags in seen.items()}


def card_kind(card: ProductCard) -> tuple:
    """What a card holds, as far as text matching goes: how many printed names, which facts, and whether its
    description adds words of its own (a formulary entry of name and form holds one or two names and no more)."""
    described = bool(set(tokens(card.description)) - set(tokens(card.printed_text())))
    return len(card.aliases), tuple(sorted(card.facts)), described


def usual_kind(cards: Sequence[ProductCard]) -> tuple:
    """The most common `card_kind` among `cards`."""
    return Counter(card_kind(c) for c in cards).most_common(1)[0][0]


def cut_to(card: ProductCard, kind: tuple) -> ProductCard:
    """`card` holding no more than a card of `kind` does: its first names, those facts, a description only if
    `kind` has one. What a richly described trained product would look like with a new product's card."""
    names, facts, described = kind
    return ProductCard(card.label, {k: f for k, f in card.facts.items() if k in facts}, card.aliases[:names],
                       card.description if described else "", [])


class CardTextMatcher:
    """Each OCR word votes for the cards holding a word like it, weighted by how rare that word is among cards.

    Similarity is rapidfuzz's ratio, or its partial ratio for words of 5+ letters ("MELLANMJOLK" inside
    "mellanmjölkdryck"), kept above `min_similarity` and rescaled to [0, 1]; weights are inverse document
    frequencies over the cards, so a maker printed on ten cards counts less than "laktosfri" printed on one.
    """

    def __init__(self, min_similarity: float = 0.7, partial_from: int = 5, description_weight: float = 0.2,
                 length_power: float = 0.5):
        self.min_similarity, self.partial_from = min_similarity, partial_from
        self.description_weight, self.length_power = description_weight, length_power

    def fit(self, cards: dict[str, ProductCard], seen: Optional[dict[str, list[str]]] = None) -> "CardTextMatcher":
        """Index the cards' words: printed names count fully, description words `description_weight`.

        `seen`: words read on a class's photos (`frequent_words`); they count only towards how common a word is.
        """
        self.classes_ = list(cards)
        per_class = [self._rows(cards[c]) for c in self.classes_]
        self.vocabulary_ = sorted({t for ts in per_class for t in ts})
        index = {t: i for i, t in enumerate(self.vocabulary_)}
        self.membership_ = np.zeros((len(self.classes_), len(self.vocabulary_)), np.float32)
        for c, ts in enumerate(per_class):
            self.membership_[c, [index[t] for t in ts]] = list(ts.values())
        present = self.membership_ > 0
        for label, words in (seen or {}).items():
            if label in self.classes_:
                present[self.classes_.index(label), [index[w] for w in words if w in index]] = True
        df = present.sum(0)
        self.idf_ = np.log((1 + len(self.classes_)) / (1 + df)).astype(np.float32) + 1.0
        self.norm_ = self._norm(self.membership_)
        return self

    def _norm(self, membership: np.ndarray) -> np.ndarray:
        """Long cards have more words for OCR noise to land on: their sums are shrunk by length ** power."""
        return np.maximum(membership.sum(1), 1.0) ** -self.length_power

    def _rows(self, card: ProductCard) -> dict[str, float]:
        """A card's words and their weights: printed names count fully, description words `description_weight`."""
        return {**{t: self.description_weight for t in tokens(card.description)},
                **{t: 1.0 for t in tokens(card.printed_text())}}

    def with_cards(self, cards: dict[str, ProductCard]) -> "CardTextMatcher":
        """A copy in which the classes of `cards` hold those cards instead, every word keeping the weight it has
        among the fitted cards (words the fitted cards lack are left out): how a card of another kind would
        match against the same competitors."""
        out = copy.copy(self)
        out.membership_ = self.membership_.copy()
        index = {t: i for i, t in enumerate(self.vocabulary_)}
        for label, card in cards.items():
            row = out.membership_[self.classes_.index(label)]
            row[:] = 0
            for t, w in self._rows(card).items():
                if t in index:
                    row[index[t]] = w
        out.norm_ = self._norm(out.membership_)
        return out

    def _similarity(self, words: list[str]) -> np.ndarray:
        """(n_words, n_vocabulary) similarity in [0, 1], zero below `min_similarity`."""
        from rapidfuzz import fuzz, process
        sim = process.cdist(words, self.vocabulary_, scorer=fuzz.ratio, dtype=np.float32) / 100
        long_words = [i for i, w in enumerate(words) if len(w) >= self.partial_from]
        if long_words:
            partial = process.cdist([words[i] for i in long_words], self.vocabulary_, scorer=fuzz.partial_ratio,
                                    dtype=np.float32) / 100
            short_vocab = np.array([len(v) < self.partial_from for v in self.vocabulary_])
            partial[:, short_vocab] = 0  # "arla" inside "arlagardar" is not evidence of a word
            sim[long_words] = np.maximum(sim[long_words], partial)
        return np.clip((sim - self.min_similarity) / (1 - self.min_similarity), 0, 1)

    def scores(self, texts: Sequence[str], classes: Sequence[str]) -> np.ndarray:
        """(n_texts, n_classes): summed idf-weighted best matches of each OCR word in each class's card."""
        out = np.zeros((len(texts), len(classes)), np.float32)
        rows = [self.classes_.index(c) if c in self.classes_ else -1 for c in classes]
        known = [j for j, r in enumerate(rows) if r >= 0]
        if not self.vocabulary_ or not known:
            return out
        member = self.membership_[[rows[j] for j in known]] * self.idf_
        for i, text in enumerate(texts):
            words = tokens(text)
            if words:
                sim = self._similarity(words)  # (words, vocab)
                out[i, known] = (sim[:, None, :] * member[None]).max(axis=2).sum(axis=0)
        out[:, known] *= self.norm_[[rows[j] for j in known]]
        return out
