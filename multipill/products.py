"""The seed's ten products as the synthetic generator draws them (sourced facts live in the product cards)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Product:
    """What a pack prints and how it looks; lookalikes share `style`."""

    brand: str
    ingredients: tuple[str, ...]
    strength: str
    form: str
    style: str
    extra: tuple[str, ...] = field(default_factory=tuple)

    @property
    def names(self) -> list[str]:
        """Words that identify the product in OCR text (brand first)."""
        return [self.brand, *self.ingredients]


# Packs in one style share colours and layout, so only the printed words tell them apart.
STYLES: dict[str, dict[str, tuple[int, int, int]]] = {
    "flu-orange": {"body": (236, 120, 40), "band": (250, 220, 60), "ink": (20, 20, 90)},
    "analgesic-blue": {"body": (40, 90, 190), "band": (240, 240, 245), "ink": (200, 20, 30)},
    "green-white": {"body": (40, 150, 80), "band": (245, 245, 240), "ink": (15, 60, 25)},
    "supplement-gold": {"body": (200, 160, 40), "band": (120, 30, 30), "ink": (255, 250, 230)},
}

SEED_PRODUCTS: tuple[Product, ...] = (
    Product("Alaxan", ("Ibuprofen", "Paracetamol"), "200mg/325mg", "capsule", "analgesic-blue"),
    Product("Bactidol", ("Hexetidine",), "0.1%", "oral solution", "green-white"),
    Product("Bioflu", ("Phenylephrine HCl", "Chlorphenamine", "Paracetamol"), "10mg/2mg/500mg",
            "tablet", "flu-orange"),
    Product("Biogesic", ("Paracetamol",), "500mg", "tablet", "analgesic-blue"),
    Product("DayZinc", ("Ascorbic Acid", "Zinc"), "500mg/10mg", "capsule", "supplement-gold"),
    Product("Decolgen", ("Phenylpropanolamine", "Chlorphenamine", "Paracetamol"), "25mg/2mg/500mg",
            "tablet", "flu-orange"),
    Product("Fish Oil", ("Omega-3", "EPA", "DHA"), "1000mg", "softgel", "supplement-gold"),
    Product("Kremil S", ("Aluminum Hydroxide", "Magnesium Hydroxide", "Simeticone"),
            "178mg/233mg/30mg", "tablet", "green-white"),
    Product("Medicol", ("Ibuprofen",), "200mg", "softgel", "analgesic-blue"),
    Product("Neozep", ("Phenylephrine HCl", "Chlorphenamine", "Paracetamol"), "10mg/2mg/500mg",
            "tablet", "flu-orange"),
)


def lookalike_groups(products: tuple[Product, ...] = SEED_PRODUCTS) -> list[list[str]]:
    """Brands that share a style, i.e. the groups only text can separate."""
    groups: dict[str, list[str]] = {}
    for p in products:
        groups.setdefault(p.style, []).append(p.brand)
    return [g for g in groups.values() if len(g) > 1]
