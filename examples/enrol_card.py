"""A new product, known only from its card, enrolled into a fitted model without retraining.

    python examples/enrol_card.py            # trains on three synthetic products, enrols Neozep from its card
    python examples/enrol_card.py --quick
"""
import argparse
import json
import tempfile
from pathlib import Path

from multipill import PillClassifier, generate_packs
from multipill.products import SEED_PRODUCTS

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--quick", action="store_true")
args = parser.parse_args()
work = Path(tempfile.mkdtemp())
known = tuple(p for p in SEED_PRODUCTS if p.brand in ("Bioflu", "Decolgen", "Biogesic"))
new = next(p for p in SEED_PRODUCTS if p.brand == "Neozep")
data = generate_packs(work / "packs", {"train": 10, "validation": 6}, products=known)
clf = PillClassifier(cards=None, image_size=128 if args.quick else 224, epochs=20 if args.quick else 100).fit(data)

card = {"Neozep": {"brand": {"value": "Neozep", "source": "the pack's leaflet"},
                   "dosage_form": {"value": "tablet", "source": "the pack's leaflet"},
                   "aliases": ["NEOZEP", new.strength]}}
(work / "cards.json").write_text(json.dumps(card))
clf.add_products(work / "cards.json")                       # no photo of Neozep was ever seen
clf.save(work / "model")

photos = generate_packs(work / "neozep", {"test": 4}, products=(new,), seed=5)
for pred in PillClassifier.load(work / "model").predict(sorted((photos / "test" / "Neozep").glob("*.png"))):
    print(f"{pred.label} ({pred.confidence:.3f}, from {pred.source}), abstained: {pred.abstained}; "
          f"read {pred.text!r}; {pred.notes[0] if pred.notes else ''}")
