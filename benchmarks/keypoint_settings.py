"""Where the keypoint card matcher's defaults come from: zero-shot top-1 of grocery `train` photos against the 31
studio pictures of `cards/` (the photo's product is the card with the most keypoint inliers), per setting.

    python benchmarks/keypoint_settings.py           # all 864 train photos, every setting (2-4 minutes each on 2 cores)
    python benchmarks/keypoint_settings.py --quick   # 2 photos per class, two settings

`train` photos only: `val` (new shop visits) is what RESULTS reports the matcher on, so nothing is chosen there.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from common import SHARED, bootstrap_ci, markdown_table, parser, subsample, write_json
from multipill.cards import card_pictures, load_cards
from multipill.data import load_splits
from multipill.images import load_image
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


def main() -> None:
    args = parser(__doc__).parse_args()
    data = SHARED / "grocery-packages"
    train = load_splits(data)["train"]
    if args.quick:
        train = subsample(train, 2, 0)
    cards = {c: card_pictures(card) for c, card in load_cards(data / "cards").items()}  # as `fit` indexes them
    classes = sorted(cards)
    photos = [load_image(s) for s in train.sources]
    labels = np.array([classes.index(y) for y in train.labels])
    chosen = list(SETTINGS)[:1] + list(SETTINGS)[-1:] if args.quick else list(SETTINGS)
    results = {name: top1(SETTINGS[name], cards, photos, labels, classes) for name in tqdm(chosen, desc="settings")}
    table = markdown_table(["setting", f"zero-shot top-1 on train (n={len(photos)})", "seconds"],
                           [[n, f"{r['top1']:.3f} [{r['top1_ci95'][0]:.3f}, {r['top1_ci95'][1]:.3f}]",
                             f"{r['seconds']:.0f}"] for n, r in results.items()])
    print(table)
    write_json(Path(args.out), "keypoint_settings" + ("_quick" if args.quick else ""),
               {"photos": len(photos), "results": results, "table": table})


if __name__ == "__main__":
    main()
