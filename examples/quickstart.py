"""The Python API on an ImageFolder: fit a fused classifier, compare it with image-only, save, load, predict.

    python examples/quickstart.py PATH/TO/IMAGEFOLDER   # <split>/<class>/<image>, e.g. ../shared/data/grocery-packages
    python examples/quickstart.py                       # synthetic packs made on the spot
    python examples/quickstart.py --quick               # smaller and faster (what the tests run)
"""
import argparse
import tempfile
from pathlib import Path

from multipill import PillClassifier, generate_packs
from multipill.cli import format_table

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("data", nargs="?", help="an ImageFolder; default: synthetic packs")
parser.add_argument("--quick", action="store_true")
args = parser.parse_args()
work = Path(tempfile.mkdtemp())
n = {"train": 10, "validation": 6, "test": 6} if args.quick else {"train": 16, "validation": 8, "test": 8}
data = Path(args.data) if args.data else generate_packs(work / "packs", n)

clf = PillClassifier(image_size=128 if args.quick else 224, epochs=20 if args.quick else 100)
clf.fit(data)
print(format_table(clf.evaluate(data)))           # image-only, text-only and fused side by side

clf.save(work / "model")
clf = PillClassifier.load(work / "model")
photo = next(p for p in sorted(Path(data).rglob("*")) if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
pred = clf.predict(photo)
print(f"{photo.name}: {pred.label} ({pred.confidence:.3f}, from {pred.source}); abstained: {pred.abstained}; "
      f"OCR read {pred.text!r}")
print(pred.warning)
