"""The best image model multipill trains on drug-vision within an hour on 2 CPU cores, saved with save().

    python benchmarks/best_model.py                  # full: train 8,000 / val 1,000; saves to --save
    python benchmarks/best_model.py --quick          # 10 images per class, 2 epochs: checks the script only
    python benchmarks/best_model.py --ocr rapidocr --ocr-train-per-class 100   # + imprint text, fused

EfficientNet-Lite0 (packaged ImageNet weights) with its last three stages and head conv unfrozen: the frozen
stem is run once per augmented view and cached, so each epoch only recomputes what learns. Adam with a
cosine schedule, so the fixed epoch budget ends converged. The Bioflu / Neozep / Decolgen confusions are
reported on their own: they are the lookalikes the seed study could not separate.
"""
from __future__ import annotations

import time
from pathlib import Path

from common import SHARED, markdown_table, parser, train_val, write_json
from multipill import PillClassifier
from multipill.metrics import branch_report
from multipill.products import lookalike_groups
from multipill.plots import confusion_png, history_png

LOOKALIKES = ["Bioflu", "Decolgen", "Neozep"]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", default=str(SHARED / "drug-vision"))
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--freeze", default="partial")
    p.add_argument("--unfreeze-stages", type=int, default=3)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--views", type=int, default=2)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--ocr", default="none", help="an OCR engine to fuse imprint text (default: image-only)")
    p.add_argument("--ocr-train-per-class", type=int, default=100)
    p.add_argument("--save", default=None, help="folder for the trained model (default: <out>/best_model)")
    args = p.parse_args()
    train, val = train_val(args.data, args.quick)
    if args.quick:
        args.epochs, args.views, args.image_size = 2, 1, 96
    out = Path(args.out)
    clf = PillClassifier(backbone=args.backbone, freeze=args.freeze, unfreeze_stages=args.unfreeze_stages,
                         fusion=args.ocr != "none", ocr=args.ocr, ocr_train_per_class=args.ocr_train_per_class,
                         image_size=args.image_size, views=args.views, epochs=args.epochs,
                         lr=args.lr, schedule="cosine", patience=args.epochs)
    start = time.time()
    clf.fit(train, val)
    seconds = time.time() - start
    save_dir = Path(args.save or out / ("best_model_quick" if args.quick else "best_model"))
    clf.save(save_dir)
    v = clf.validation_  # held-out outputs: image branch on val, fusion out-of-fold (cross-fitted) on val
    groups = lookalike_groups()
    reports = {"image": branch_report(v["y"], v["image"], clf.classes_, groups)}
    if clf.fusion:
        reports["fused"] = branch_report(v["y"], v["answer"], clf.classes_, groups)
    tag = "best_model" + ("_quick" if args.quick else "")
    answer = reports.get("fused", reports["image"])
    confusion_png(answer["confusion_matrix"], clf.classes_, out / f"{tag}_confusion.png", "best drug-vision model")
    history_png(clf.image_.history_, out / f"{tag}_curves.png")
    idx = [clf.classes_.index(c) for c in LOOKALIKES if c in clf.classes_]
    lookalike = {}
    for branch, r in reports.items():
        rows = [[clf.classes_[i]] + [str(r["confusion_matrix"][i][j]) for j in idx] for i in idx]
        lookalike[branch] = markdown_table(["true \\ predicted"] + [clf.classes_[j] for j in idx], rows)
    name = f"{args.backbone} {args.freeze}({args.unfreeze_stages}) {args.image_size}px"
    table = markdown_table(["model", "answer", "val accuracy", "val loss", "macro F1", "train minutes", "epochs"],
                           [[name, branch, f"{r['accuracy']:.4f}", f"{r['log_loss']:.3f}", f"{r['macro']['f1']:.4f}",
                             f"{seconds / 60:.1f}", str(len(clf.image_.history_))] for branch, r in reports.items()])
    print(table, "\n", clf.fusion_.report_.get("decision", ""))
    for branch, t in lookalike.items():
        print(f"\nlookalike confusions, {branch} (validation counts)\n{t}")
    print(f"\nsaved to {save_dir}")
    write_json(out, tag, {"args": vars(args), "fit_seconds": seconds, "reports": reports, "table": table,
                          "fusion": clf.fusion_.report_, "lookalike_tables": lookalike, "saved_to": str(save_dir)})


if __name__ == "__main__":
    main()
