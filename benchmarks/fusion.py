"""Fusion vs vision-only vs text-only on real photos, with bootstrap 95% intervals.

    python benchmarks/fusion.py --dataset grocery-packages          # full: what RESULTS.md reports
    python benchmarks/fusion.py --dataset drug-vision --quick        # a few minutes
    python benchmarks/fusion.py --dataset drug-vision --ocr rapidocr --views 2 --ocr-train-per-class 100

Protocols (--protocol):
- crossfit (default): both branches are trained on `train` less its last 15% (in file order) of each class
  that has no `val` images (the "train tail"); early stopping and fusion use `val`. Image-only and text-only
  are reported on `val`, and fused out-of-fold: fusion is fitted in 5 folds, each fold's images predicted by
  the fusion fitted on the other four. The train tail, trained on by no branch, is reported beside it (fused
  by the head fitted on all of `val`). Why apart: on grocery-packages the tail's photos come from the same
  shop visits as the training photos (the frozen image branch is right on 94% of them and on 55% of `val`),
  so they say little about new photos. `--fusion-on val+tail` (the protocol until 2026-11-22) fits the head on
  both; RESULTS.md compares the two.
- holdout: branches and fusion fitted on `train` minus a random stratified 15% split, reported on `val`.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from common import SHARED, bootstrap_ci, error_ratio_ci, markdown_table, parser, subsample, write_json
from multipill import PillClassifier
from multipill.data import VAL_SPLITS, Samples, load_splits, pick, stratified_split
from multipill.metrics import branch_report, group_errors
from multipill.plots import branches_png, confusion_png
from multipill.products import lookalike_groups

BRANCHES = ("image", "text", "fused")


def brand_groups(classes: list[str]) -> list[list[str]]:
    """Variants of one brand (the name before the first '-'): the groups only printed words separate."""
    groups: dict[str, list[str]] = {}
    for c in classes:
        groups.setdefault(c.split("-")[0], []).append(c)
    return [g for g in groups.values() if len(g) > 1]


def tail_split(samples: Samples, has_val: set[str], fraction: float) -> tuple[Samples, Samples]:
    """Move the last `fraction` of each class without validation images (in file order) out of training.

    The last images rather than random ones: shop photos come in bursts of near-duplicates, and a random
    split would put a twin of every held-out photo in training.
    """
    labels = np.asarray(samples.labels)
    moved = []
    for c in sorted(set(labels) - has_val):
        idx = np.flatnonzero(labels == c)
        moved += idx[len(idx) - max(1, int(round(len(idx) * fraction))):].tolist()
    keep = sorted(set(range(len(labels))) - set(moved))
    return samples.subset(keep), samples.subset(sorted(moved))


def branch_predictions(report: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """True labels and each branch's predicted labels from an evaluation report."""
    return np.asarray(report["y_true"]), {b: np.asarray(report[b]["y_pred"]) for b in BRANCHES}


def score_set(y: np.ndarray, preds: dict[str, np.ndarray], classes: list[str], groups: list[list[str]]) -> dict:
    """Each branch's accuracy with its interval, macro F1 (classes present) and lookalike errors on one set of
    images, and the fused / vision-only error ratio with its paired interval."""
    out: dict = {}
    for b in BRANCHES:
        correct = preds[b] == y
        g = group_errors(y, preds[b], classes, groups)
        out[b] = {"accuracy": float(correct.mean()), "accuracy_ci95": list(bootstrap_ci(correct)),
                  "macro_f1": float(f1_score(y, preds[b], labels=np.unique(y), average="macro", zero_division=0)),
                  "errors_within_groups": sum(x["errors_within_group"] for x in g),
                  "n_in_groups": sum(x["n"] for x in g)}
    vision_err, fused_err = 1 - out["image"]["accuracy"], 1 - out["fused"]["accuracy"]
    out["error_ratio"] = {"fused_over_image": fused_err / max(vision_err, 1e-9),
                          "ci95": list(error_ratio_ci(preds["fused"] == y, preds["image"] == y))}
    return out


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--dataset", default="grocery-packages", help="a folder name in ../shared/data")
    p.add_argument("--data", default=None, help="ImageFolder path or hub name (overrides --dataset)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--freeze", default="frozen")
    p.add_argument("--ocr", default="easyocr")
    p.add_argument("--ocr-enlarge-to", type=int, default=None,
                   help="OCR also reads an enlarged copy of photos whose shorter side is below this")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--schedule", default="constant", choices=["constant", "cosine"])
    p.add_argument("--ocr-train-per-class", type=int, default=None,
                   help="text branch trained on OCR of this many train images per class (default: all)")
    p.add_argument("--tag", default="", help="suffix for the output files (to keep several configurations)")
    p.add_argument("--fusion-on", choices=["val", "val+tail"], default="val",
                   help="crossfit: the images fusion is fitted on and reported out-of-fold: `val` (new shop "
                        "visits; default) or `val` plus the train tail (the protocol until 2026-11-22)")
    p.add_argument("--protocol", choices=["crossfit", "holdout"], default="crossfit",
                   help="crossfit: branches fitted on train less the tail of classes without val images, "
                        "fusion cross-fitted on --fusion-on and reported out-of-fold there, the tail beside it; "
                        "holdout: fusion fitted on a random 15%% of train, reported on val")
    args = p.parse_args()
    splits = load_splits(args.data or SHARED / args.dataset)
    train, evaluation = splits["train"], pick(splits, VAL_SPLITS)
    if args.quick:  # six classes, a few images each: checks the script end to end, measures nothing
        keep = sorted(set(train.labels))[:6]
        train = subsample(train.subset([i for i, c in enumerate(train.labels) if c in keep]), 10, 0)
        evaluation = subsample(evaluation.subset([i for i, c in enumerate(evaluation.labels) if c in keep]), 3, 0)
        args.epochs, args.views, args.image_size = min(args.epochs, 15), 1, 128
    classes = sorted(set(train.labels))
    groups = lookalike_groups() if set(classes) >= {"Bioflu", "Neozep"} else brand_groups(classes)
    clf = PillClassifier(backbone=args.backbone, freeze=args.freeze, ocr=args.ocr, image_size=args.image_size,
                         epochs=args.epochs, views=args.views, lr=args.lr, schedule=args.schedule,
                         patience=args.epochs if args.schedule == "cosine" else 10, confusable_groups=groups,
                         ocr_train_per_class=args.ocr_train_per_class,
                         ocr_options={"enlarge_to": args.ocr_enlarge_to} if args.ocr_enlarge_to else None)
    start = time.time()
    if args.protocol == "holdout":
        fit_idx, val_idx = stratified_split(train.labels, 0.3 if args.quick else 0.15, seed=0)
        clf.fit(train.subset(fit_idx), train.subset(val_idx))
        fit_seconds = time.time() - start
        result = clf.evaluate(evaluation, ignore_unknown=True)
        sets = {"val": branch_predictions(result)}
    else:
        fit_part, tail = tail_split(train, set(evaluation.labels), 0.15)
        fusion_set = evaluation if args.fusion_on == "val" else \
            Samples(evaluation.sources + tail.sources, evaluation.labels + tail.labels)
        clf.fit(fit_part, fusion_set)
        fit_seconds = time.time() - start
        v = clf.validation_
        result = {"classes": clf.classes_, "n": len(v["y"]), "with_text": int(v["has_text"].sum()),
                  "fusion": clf.fusion_.report_, "y_true": v["y"].tolist(),
                  # per-image held-out outputs, so other fusion rules can be studied without refitting
                  "held_out": {"has_text": v["has_text"].tolist(),
                               **{k: np.round(v[k], 5).tolist() for k in ("image", "text", "fused_cv",
                                                                          "text_confidence")}}}
        for branch, key in (("image", "image"), ("text", "text"), ("fused", "answer")):
            result[branch] = branch_report(v["y"], v[key], clf.classes_, groups)
        y, preds = branch_predictions(result)
        if args.fusion_on == "val" or not tail.labels:
            sets = {"val": (y, preds)}
            if tail.labels:  # trained on by no branch; fused by the head fitted on all of val
                t = clf.evaluate(tail, ignore_unknown=True)
                result["train_tail"] = {k: t[k] for k in ("n", "with_text", "y_true", *BRANCHES)}
                sets["train tail"] = branch_predictions(t)
        elif len(y) == len(fusion_set.labels):  # every image kept, so the tail is the last len(tail)
            n_val = len(y) - len(tail.labels)
            sets = {"val": (y[:n_val], {b: p[:n_val] for b, p in preds.items()}),
                    "train tail": (y[n_val:], {b: p[n_val:] for b, p in preds.items()})}
        else:
            sets = {"val + train tail": (y, preds)}
        if "train tail" in sets:
            sets["both"] = (np.r_[sets["val"][0], sets["train tail"][0]],
                            {b: np.r_[sets["val"][1][b], sets["train tail"][1][b]] for b in BRANCHES})
    result["sets"] = {k: score_set(yy, preds, result["classes"], groups)
                      for k, (yy, preds) in sets.items()}
    primary = result["sets"][next(iter(sets))]  # intervals live in result["sets"]: with --fusion-on val+tail
    # the branch reports cover val and tail together, so the first set's interval does not belong beside them
    scores = {b: primary[b]["accuracy"] for b in BRANCHES}
    intervals = {b: tuple(primary[b]["accuracy_ci95"]) for b in BRANCHES}
    rows = [[k, f"{len(sets[k][0])}", b, f"{r[b]['accuracy']:.3f} [{r[b]['accuracy_ci95'][0]:.3f}, "
             f"{r[b]['accuracy_ci95'][1]:.3f}]", f"{r[b]['macro_f1']:.3f}",
             f"{r[b]['errors_within_groups']}/{r[b]['n_in_groups']}"]
            for k, r in result["sets"].items() for b in BRANCHES]
    name = f"fusion_{Path(args.data or args.dataset).name}_{args.protocol}{args.tag}{'_quick' if args.quick else ''}"
    out = Path(args.out)
    table = markdown_table(["evaluation images", "n", "branch", "accuracy [95% CI]", "macro F1",
                            "errors within lookalike groups"], rows)
    ratios = "; ".join(f"{k}: {r['error_ratio']['fused_over_image']:.2f} [{r['error_ratio']['ci95'][0]:.2f}, "
                       f"{r['error_ratio']['ci95'][1]:.2f}]" for k, r in result["sets"].items())
    summary = (f"fit {fit_seconds:.0f}s; text found on {result['with_text']} of the {result['n']} images fusion "
               f"was fitted on (crossfit) or evaluated on (holdout); fused error / vision error [95% CI]: {ratios}; "
               f"fusion: {result['fusion']['decision']}")
    print(table + "\n" + summary)
    write_json(out, name, {"args": vars(args), "fit_seconds": fit_seconds, "summary": summary,
                           "table_markdown": table, "groups": groups, "result": result})
    branches_png({("image-only" if b == "image" else b): scores[b] for b in BRANCHES}, out / f"{name}.png",
                 name, {("image-only" if b == "image" else b): intervals[b] for b in BRANCHES})
    confusion_png(result["fused"]["confusion_matrix"], result["classes"], out / f"{name}_confusion_fused.png",
                  f"{name}: fused")
    confusion_png(result["image"]["confusion_matrix"], result["classes"], out / f"{name}_confusion_image.png",
                  f"{name}: image-only")


if __name__ == "__main__":
    main()
