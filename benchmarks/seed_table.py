"""The seed study's table on drug-vision, beside multipill's default backbone in each freeze mode.

    python benchmarks/seed_table.py            # full: train 8,000 / val 1,000, what RESULTS.md reports
    python benchmarks/seed_table.py --quick    # 10 images per class, 3 epochs: checks the script only
    python benchmarks/seed_table.py --only "lite0 blocks"   # one row; the saved rows of the others are kept

Image-only (the seed had no text branch), the seed's head, augmentations and optimiser. Configurations whose
ImageNet weights cannot be had on this machine are listed as not run: random-initialised numbers are never
shown as the seed's configuration. `--weights-dir` may hold `<backbone>.safetensors` files to run them.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import SHARED, markdown_table, parser, train_val, write_json
from multipill import PillClassifier, create_backbone
from multipill.hub import OfflineError
from multipill.plots import confusion_png, history_png

# (label, backbone, freeze, seed's test accuracy)
CONFIGS = [("ResNet50V2 frozen", "resnetv2_50", "frozen", 0.439),
           ("ResNet50V2 conv4-5 unfrozen", "resnetv2_50", "partial", 0.837),
           ("EfficientNetB0 frozen", "efficientnet_b0", "frozen", 0.491),
           ("EfficientNetB0 blocks 6-7 unfrozen", "efficientnet_b0", "partial", 0.797),
           ("EfficientNet-Lite0 frozen (multipill default)", "efficientnet_lite0", "frozen", None),
           ("EfficientNet-Lite0 blocks 6-7 unfrozen", "efficientnet_lite0", "partial", None),
           ("EfficientNet-Lite0 full fine-tuning", "efficientnet_lite0", "full", None)]


def table_row(label: str, result: dict, seed_acc) -> list[str]:
    seed = f"{seed_acc:.3f}" if seed_acc else ""
    if result["status"] != "ran":
        return [label, "not run: no ImageNet weights offline", "", "", "", "", seed]
    r = result["report"]
    return [label, f"{r['accuracy']:.3f}", f"{r['log_loss']:.3f}", f"{r['macro']['f1']:.3f}",
            f"{result['fit_seconds'] / 60:.1f}", str(result["epochs_run"]), seed]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", default=str(SHARED / "drug-vision"))
    p.add_argument("--weights-dir", default=None, help="folder with <backbone>.safetensors ImageNet weights")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--partial-epochs", type=int, default=15,
                   help="epoch cap for partial fine-tuning (about 2.5 minutes per epoch on 2 cores)")
    p.add_argument("--full-epochs", type=int, default=2,
                   help="epoch cap for full fine-tuning, which recomputes the whole network every step")
    p.add_argument("--only", nargs="*", default=None,
                   help="run only configs whose label contains these; the others keep their saved results")
    args = p.parse_args()
    train, val = train_val(args.data, args.quick)
    if args.quick:
        args.epochs, args.views, args.image_size = 3, 1, 96
    out = Path(args.out)
    name = "seed_table" + ("_quick" if args.quick else "")
    saved = out / f"{name}.json"
    results = json.loads(saved.read_text())["results"] if args.only and saved.exists() else {}
    for label, backbone, freeze, seed_acc in CONFIGS:
        if args.only and not any(o.lower() in label.lower() for o in args.only):
            continue
        pretrained = True
        if args.weights_dir and (Path(args.weights_dir) / f"{backbone}.safetensors").exists():
            pretrained = str(Path(args.weights_dir) / f"{backbone}.safetensors")
        epochs = min(args.epochs, {"full": args.full_epochs, "partial": args.partial_epochs}.get(freeze, args.epochs))
        clf = PillClassifier(backbone=backbone, freeze=freeze, fusion=False, pretrained=pretrained,
                             image_size=args.image_size, epochs=epochs, views=args.views)
        try:
            create_backbone(backbone, pretrained)  # fails within seconds when weights are out of reach
        except OfflineError as exc:
            results[label] = {"status": "not run", "reason": str(exc)}
            continue
        start = time.time()
        clf.fit(train, val)
        seconds = time.time() - start
        r = clf.evaluate(val)["image"]
        tag = f"seed_{backbone}_{freeze}{'_quick' if args.quick else ''}"
        confusion_png(r["confusion_matrix"], clf.classes_, out / f"{tag}_confusion.png", label)
        history_png(clf.image_.history_, out / f"{tag}_curves.png")
        results[label] = {"status": "ran", "backbone": backbone, "freeze": freeze, "fit_seconds": seconds,
                          "epochs_run": len(clf.image_.history_), "epoch_cap": epochs, "args": vars(args),
                          "report": r, "seed_test_accuracy": seed_acc}
        save(out, name, args, results)  # after every row: an interrupted run keeps the rows it finished
    print(save(out, name, args, results))


def save(out: Path, name: str, args: argparse.Namespace, results: dict) -> str:
    """Rebuild the table from every saved row and write the JSON; returns the table."""
    rows = [table_row(label, results[label], seed_acc) for label, _, _, seed_acc in CONFIGS if label in results]
    table = markdown_table(["configuration", "val accuracy", "val loss", "macro F1", "train minutes",
                            "epochs", "seed's test accuracy"], rows)
    write_json(out, name, {"args": vars(args), "table": table, "results": results})
    return table


if __name__ == "__main__":
    main()
