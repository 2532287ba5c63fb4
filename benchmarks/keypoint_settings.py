"""Where the keypoint card matcher's defaults come from: zero-shot top-1 of grocery `train` photos against the 31
studio pictures of `cards/` (the photo's product is the card with the most keypoint inliers), per setting.

    python benchmarks/keypoint_settings.py           # all 864 train photos, every setting (2-4 minutes each on 2 cores)
    python benchmarks/keypoint_settings.py --quick   # 2 photos per class, two settings
    python benchmarks/keypoint_settings.py --tables photos   # training photos indexed too (`keypoint_photos`)

The "photos" table indexes, beside the studio pictures, k seeded photos per class from the first 70% of its
`train` photos (by file name, the order they were taken in) and queries 4 photos spread over the last 30%, so no
query is indexed and queries come from later in the shoot than the references.
`train` photos only: `val` (new shop visits) is what RESULTS reports the matcher on, so nothing is chosen there.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from common import SHARED, bootstrap_ci, markdown_table, parser, subsample, write_json
from multipill.cards import card_pictures, load_cards
from multipill.data import load_splits, per_class
from multipill.images import describe, load_image
from multipill.keypoints import KeypointCardMatcher

OPENCV = dict(ratio=0.8, contrast=0.04, root=False)  # the matcher before its defaults were chosen here
SETTINGS = {
    "OpenCV's SIFT, ratio 0.8": OPENCV,
    "contrast 0.02": {**OPENCV, "contrast": 0.02},
    "ratio 0.85": {**OPENCV, "ratio": 0.85},
    "ratio 0.75": {**OPENCV, "ratio": 0.75},
    "RootSIFT": {**OPENCV, "root": True},
    "2000 features": {**OPENCV, "features": 2000},
    "contrast 0.02, ratio 0.85": {**OPENCV, "contrast": 0.02, "ratio": 0.85},
    "contrast 0.02, ratio 0.85, RootSIFT (default)": {},
}


def top1(settings: dict, cards: dict, photos: list, labels: np.ndarray, classes: list[str]) -> dict:
    """One setting's zero-shot top-1 (a photo without any inlier counts as wrong) and its seconds."""
    start = time.perf_counter()
    scores = KeypointCardMatcher(**settings).fit(cards).scores(photos, classes)
    right = (scores.argmax(1) == labels) & (scores.max(1) > 0)
    return {"settings": settings, "top1": float(right.mean()), "top1_ci95": list(bootstrap_ci(right)),
            "seconds": time.perf_counter() - start}


def photo_references(train, cards: dict, classes: list[str], ks: list[int], queries: int) -> dict:
    """Top-1 of later `train` photos against the studio pictures plus k earlier photos per class, per k."""
    ordered = sorted(zip(train.sources, train.labels), key=lambda t: describe(t[0]))  # the path
    asked, pool = [], []
    for c in classes:
        mine = [s for s, y in ordered if y == c]
        cut = round(0.7 * len(mine))
        late = mine[cut:]
        asked += [(late[i], c) for i in np.unique(np.linspace(0, len(late) - 1, queries).round().astype(int))]
        pool += [(s, c) for s in mine[:cut]]
    features = KeypointCardMatcher().extract([load_image(s) for s, _ in asked])
    labels = np.array([classes.index(c) for _, c in asked])
    out = {}
    for k in tqdm(ks, desc="photos per class"):
        start = time.perf_counter()
        indexed = {c: list(ims) for c, ims in cards.items()}
        for i in (per_class([c for _, c in pool], k, 0) if k else []):
            indexed[pool[i][1]].append(load_image(pool[i][0]))
        matcher = KeypointCardMatcher().fit(indexed)
        scored = time.perf_counter()
        scores = matcher.scores_from(features, classes)
        right = (scores.argmax(1) == labels) & (scores.max(1) > 0)
        out[str(k)] = {"top1": float(right.mean()), "top1_ci95": list(bootstrap_ci(right)), "queries": len(right),
                       "indexed_features": int(len(matcher.descriptors_)),
                       "seconds_per_photo": (time.perf_counter() - scored) / len(right),
                       "seconds": time.perf_counter() - start}
    return out


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--tables", nargs="+", default=["settings", "photos"], choices=["settings", "photos"])
    p.add_argument("--photos", type=int, nargs="+", default=[0, 3, 8], help="training photos per class indexed")
    args = p.parse_args()
    data = SHARED / "grocery-packages"
    train = load_splits(data)["train"]
    if args.quick:
        train = subsample(train, 2, 0)
    cards = {c: card_pictures(card) for c, card in load_cards(data / "cards").items()}  # as `fit` indexes them
    classes = sorted(cards)
    result: dict = {"photos": len(train)}
    if "settings" in args.tables:
        photos = [load_image(s) for s in train.sources]
        labels = np.array([classes.index(y) for y in train.labels])
        chosen = list(SETTINGS)[:1] + list(SETTINGS)[-1:] if args.quick else list(SETTINGS)
        results = {name: top1(SETTINGS[name], cards, photos, labels, classes) for name in tqdm(chosen, desc="settings")}
        result.update(results=results, table=markdown_table(
            ["setting", f"zero-shot top-1 on train (n={len(photos)})", "seconds"],
            [[n, f"{r['top1']:.3f} [{r['top1_ci95'][0]:.3f}, {r['top1_ci95'][1]:.3f}]", f"{r['seconds']:.0f}"]
             for n, r in results.items()]))
        print(result["table"])
    if "photos" in args.tables:
        refs = photo_references(train, cards, classes, [1] if args.quick else args.photos, 1 if args.quick else 4)
        result.update(photo_references=refs, photo_table=markdown_table(
            ["training photos per class indexed", "top-1 of later train photos", "indexed features", "s/photo"],
            [[k, f"{r['top1']:.3f} [{r['top1_ci95'][0]:.3f}, {r['top1_ci95'][1]:.3f}] (n={r['queries']})",
              r["indexed_features"], f"{r['seconds_per_photo']:.2f}"] for k, r in refs.items()]))
        print(result["photo_table"])
    name = "keypoint_settings" + ("" if len(args.tables) == 2 else f"_{args.tables[0]}") + ("_quick" if args.quick else "")
    write_json(Path(args.out), name, result)


if __name__ == "__main__":
    main()
