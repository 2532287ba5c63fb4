"""Product cards: what each class is (brand, ingredients, strength, form), every fact with its source."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

WARNING = ("This identification was made by software and may be wrong: a pharmacist must confirm the "
           "product before it is used.")
FIELDS = ("brand", "active_ingredients", "strength", "dosage_form")


@dataclass
class Fact:
    """One fact and where it was published; a fact without a source must stay empty."""

    value: Any = None
    source: Optional[str] = None

    def __post_init__(self) -> None:
        if self.value not in (None, "", []) and not self.source:
            raise ValueError(f"fact {self.value!r} has no source; leave it empty rather than guess")


@dataclass
class ProductCard:
    """The facts shown beside an answer so a person can check it against the pack in hand."""

    label: str
    facts: dict[str, Fact] = field(default_factory=dict)

    @classmethod
    def from_json(cls, label: str, entry: dict) -> "ProductCard":
        unknown = set(entry) - set(FIELDS)
        if unknown:
            raise ValueError(f"card {label!r}: unknown fields {sorted(unknown)}; expected {FIELDS}")
        return cls(label, {k: Fact(**entry[k]) if isinstance(entry[k], dict) else Fact(entry[k])
                           for k in FIELDS if k in entry})

    def to_json(self) -> dict:
        return {k: {"value": f.value, "source": f.source} for k, f in self.facts.items()}

    def value(self, name: str) -> Any:
        fact = self.facts.get(name)
        return fact.value if fact else None

    def names(self) -> list[str]:
        """Brand then ingredients: the words that identify this product in OCR text."""
        brand = self.value("brand") or self.label
        return [brand, *(self.value("active_ingredients") or [])]

    def format(self) -> str:
        """Human-readable card: each fact with its source, 'unknown' where no source was found."""
        lines = [f"Product card: {self.label}"]
        for k in FIELDS:
            fact = self.facts.get(k, Fact())
            value = ", ".join(fact.value) if isinstance(fact.value, list) else fact.value
            lines.append(f"  {k.replace('_', ' ')}: {value or 'unknown (no public source found)'}"
                         + (f"  [source: {fact.source}]" if value else ""))
        return "\n".join(lines)


def load_cards(spec: str | Path | dict | None) -> dict[str, ProductCard]:
    """'seed' (the packaged cards of the 10 seed products), a JSON file, a dict, or None (no cards)."""
    if spec is None:
        return {}
    if isinstance(spec, dict):
        raw = spec
    elif str(spec) == "seed":
        raw = json.loads(resources.files("multipill").joinpath("data/seed_cards.json").read_text())
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no product-card file (expected JSON: class -> facts)")
        raw = json.loads(path.read_text())
    return {label: ProductCard.from_json(label, entry) for label, entry in raw.items() if not label.startswith("_")}


def cards_lexicon(cards: dict[str, ProductCard]) -> dict[str, list[str]]:
    """Class -> brand and ingredient names, for the text branch's fuzzy lexicon."""
    return {label: card.names() for label, card in cards.items()}
