"""Fit a fused classifier on an ImageFolder, compare it with image-only, save it and predict.

    python examples/quickstart.py PATH/TO/IMAGEFOLDER   # <split>/<class>/<image>, e.g. ../shared/data/grocery-packages
    python examples/quickstart.py                       # synthetic packs made on the spot
"""
import sys
import tempfile
from pathlib import Path

from multipill import PillClassifier, generate_packs
from multipill.cli import format_table

data = Path(sys.argv[1]) if len(sys.argv) > 1 else generate_packs(
    Path(tempfile.mkdtemp()) / "packs", {"train": 16, "validation": 8, "test": 8})

clf = PillClassifier(backbone="efficientnet_lite0", freeze="frozen", ocr="easyocr", image_size=160)
clf.fit(data)
report = clf.evaluate(data)
print(format_table(report))          # image-only, text-only and fused side by side

clf.save("quickstart-model")
clf = PillClassifier.load("quickstart-model")
first = next(p for p in sorted(Path(data).rglob("*")) if p.suffix in (".png", ".jpg"))
pred = clf.predict(first)
print(pred.label, round(pred.confidence, 3), pred.source, repr(pred.text), pred.notes)
