"""Train on a Hugging Face data set: a hub name when online, or any `datasets` object (here an imagefolder).

    python examples/hub_dataset.py owner/name            # from the hub (needs internet)
    python examples/hub_dataset.py                       # synthetic packs loaded with datasets' imagefolder
    python examples/hub_dataset.py --quick
"""
import argparse
import tempfile
from pathlib import Path

from datasets import load_dataset

from multipill import PillClassifier, generate_packs

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("name", nargs="?", help="a hub data set with image and label columns")
parser.add_argument("--image-column", default="image")
parser.add_argument("--label-column", default="label")
parser.add_argument("--quick", action="store_true")
args = parser.parse_args()

if args.name:
    data = load_dataset(args.name)
else:
    packs = generate_packs(Path(tempfile.mkdtemp()) / "packs", {"train": 10, "validation": 6, "test": 6})
    data = load_dataset("imagefolder", data_dir=str(packs))      # a DatasetDict with image and label columns
print(data)

clf = PillClassifier(image_column=args.image_column, label_column=args.label_column,
                     image_size=128 if args.quick else 224, epochs=20 if args.quick else 100).fit(data)
report = clf.evaluate(data)
print({branch: round(report[branch]["accuracy"], 3) for branch in ("image", "text", "fused") if branch in report})
