"""Product cards: what each class is (brand, ingredients, strength, form, printed words, pictures), facts sourced."""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

WARNING = ("This identification was made by software and may be wrong: a pharmacist must confirm the "
           "product before it is used.")
FIELDS = ("brand", "active_ingredients", "strength", "dosage_form")
EXTRA = ("aliases", "description", "images")  # card knowledge that needs no source: it is what the pack shows
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# information.txt keys (lower case) -> card facts; the "Title" and maker lines become printed names
_INFO_FACTS = {"brand": "brand", "active ingredients": "active_ingredients", "strength": "strength",
               "form": "dosage_form", "dosage form": "dosage_form"}
_INFO_NAMES = ("title", "name", "product", "brand", "manufacturer and volume", "manufacturer", "strength", "form",
               "dosage form", "active ingredients", "ingredients")


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
    """What is known of a product before any photo: sourced facts shown beside an answer so a person can
    check it against the pack in hand, words printed on the pack, a description and reference images."""

    label: str
    facts: dict[str, Fact] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    description: str = ""
    images: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, label: str, entry: dict) -> "ProductCard":
        unknown = set(entry) - set(FIELDS) - set(EXTRA)
        if unknown:
            raise ValueError(f"card {label!r}: unknown fields {sorted(unknown)}; expected {FIELDS + EXTRA}")
        return cls(label, {k: Fact(**entry[k]) if isinstance(entry[k], dict) else Fact(entry[k])
                           for k in FIELDS if k in entry},
                   [str(a) for a in entry.get("aliases", [])], str(entry.get("description", "")),
                   [str(p) for p in entry.get("images", [])])

    @classmethod
    def from_folder(cls, folder: str | Path) -> "ProductCard":
        """A class's folder: description_*.txt, information.txt ('Key: value' lines), pictures, card.json."""
        folder = Path(folder)
        card = (cls.from_json(folder.name, json.loads((folder / "card.json").read_text()))
                if (folder / "card.json").is_file() else cls(folder.name))
        descriptions = [_read(p) for p in sorted(folder.glob("description*.txt"))]
        card.description = "\n".join(d for d in [card.description, *descriptions] if d.strip())
        text = _read(folder / "information.txt") if (folder / "information.txt").is_file() else ""
        info = _parse_information(text)
        source = info.get("url") or info.get("source") or f"{folder.name}/information.txt (product card)"
        for key, name in _INFO_FACTS.items():
            if key in info and name not in card.facts:
                value: Any = info[key]
                if name == "active_ingredients":
                    value = [v.strip() for v in re.split(r"[,+;]", value) if v.strip()]
                card.facts[name] = Fact(value, source)
        # no "Key: value" line at all: each line is a name printed on the pack ("Decolgen", "tablet")
        card.aliases += _names(info) if info else [line.strip() for line in text.splitlines() if line.strip()]
        card.images += [str(p.resolve()) for p in sorted(folder.iterdir())
                        if p.suffix.lower() in IMAGE_SUFFIXES and str(p.resolve()) not in card.images]
        return card

    def to_json(self) -> dict:
        out: dict[str, Any] = {k: {"value": f.value, "source": f.source} for k, f in self.facts.items()}
        for k in EXTRA:
            if getattr(self, k):
                out[k] = getattr(self, k)
        return out

    def value(self, name: str) -> Any:
        fact = self.facts.get(name)
        return fact.value if fact else None

    def names(self) -> list[str]:
        """Brand then ingredients: the words that identify this product in OCR text."""
        brand = self.value("brand") or self.label
        return [brand, *(self.value("active_ingredients") or [])]

    def printed_text(self) -> str:
        """The words the card expects printed on the pack: its label, names and facts."""
        facts = [v if isinstance(v, str) else " ".join(map(str, v)) for k in FIELDS if (v := self.value(k))]
        return "\n".join([re.sub(r"[-_]+", " ", self.label), *self.aliases, *facts])

    def format(self) -> str:
        """Human-readable card: each fact with its source, 'unknown' where no source was found."""
        lines = [f"Product card: {self.label}"]
        for k in FIELDS:
            fact = self.facts.get(k, Fact())
            value = ", ".join(fact.value) if isinstance(fact.value, list) else fact.value
            lines.append(f"  {k.replace('_', ' ')}: {value or 'unknown (no public source found)'}"
                         + (f"  [source: {fact.source}]" if value else ""))
        if self.aliases:
            lines.append(f"  printed on the pack: {'; '.join(self.aliases)}")
        if self.description:
            lines.append(f"  description: {self.description.splitlines()[0][:200]}")
        return "\n".join(lines)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").strip()


def _names(info: dict[str, str]) -> list[str]:
    """The names an information.txt gives, the product's own first: title, name and product, any other key that
    holds a name or title ("product name", "generic name"), then maker, strength, form and ingredients."""
    first, rest = _INFO_NAMES[:3], _INFO_NAMES[3:]
    other = [k for k in info if k not in _INFO_NAMES and ("name" in k or "title" in k)]
    return [info[k] for k in (*first, *other, *rest) if info.get(k)]


def _parse_information(text: str) -> dict[str, str]:
    """'Key: value' lines (lower-case keys, values stripped of trailing commas); other lines are ignored."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and value.strip() and not line.startswith((" ", "\t")):
            out.setdefault(key.strip().lower(), re.sub(r"\s*,\s*$", "", value.strip()))
    return out


def load_cards(spec: str | Path | dict | None) -> dict[str, ProductCard]:
    """'seed' (the packaged cards of the 10 seed products), a JSON file, a folder of card folders (one per
    class, as in shared/data), a dict of JSON entries or of ProductCards, or None (no cards)."""
    if spec is None:
        return {}
    if isinstance(spec, dict):
        return {label: entry if isinstance(entry, ProductCard) else ProductCard.from_json(label, entry)
                for label, entry in spec.items() if not label.startswith("_")}
    if str(spec) == "seed":
        return load_cards(json.loads(resources.files("multipill").joinpath("data/seed_cards.json").read_text()))
    path = Path(spec)
    if path.is_dir():
        folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise FileNotFoundError(f"{path}: no card folders (expected one folder per class holding "
                                    "information.txt, description_*.txt and/or pictures)")
        return {f.name: ProductCard.from_folder(f) for f in folders}
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no product cards (expected a JSON file class -> card, or a folder "
                                "of card folders)")
    return load_cards(json.loads(path.read_text()))


def card_pictures(card: ProductCard) -> list:
    """The card's reference pictures as RGB images; missing or unreadable files are left out with a warning."""
    from .images import ImageLoadError, load_image
    out = []
    for path in card.images:
        try:
            out.append(load_image(path))
        except (ImageLoadError, OSError) as err:
            warnings.warn(f"card {card.label!r}: picture left out: {err}")
    return out


def cards_lexicon(cards: dict[str, ProductCard]) -> dict[str, list[str]]:
    """Class -> brand and ingredient names, for the text branch's fuzzy lexicon."""
    return {label: card.names() for label, card in cards.items()}
