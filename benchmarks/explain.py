"""Do Grad-CAM heatmaps point at the product? The pointing game on synthetic packs whose masks are exact.

    python benchmarks/explain.py            # full: what RESULTS.md reports
    python benchmarks/explain.py --quick    # tiny: checks the script only

For each backbone whose ImageNet weights can be had here and each freeze mode, an image-only classifier is
trained on synthetic packs of the 10 seed products; on new packs, a hit is the heatmap's peak falling on the
pack, and the energy share is the part of the heatmap's mass inside the pack's mask (as the blister-pack
Grad-CAM paper measured). Packs are drawn small (`--scale`, share of the photo's side) at random places, so
that pointing at the middle of the photo is not enough: a centred Gaussian is reported as that no-model
baseline, and the pack's share of the photo is what a uniform heatmap would get.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from common import markdown_table, parser, write_json
from multipill import PillClassifier, create_backbone, list_backbones
from multipill.explain import pointing_game
from multipill.hub import OfflineError
from multipill.products import SEED_PRODUCTS
from multipill.synthetic import generate_packs, render_pack


def centre_prior(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] / (size - 1) - 0.5
    return np.exp(-(xx ** 2 + yy ** 2) / (2 * 0.2 ** 2))


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--backbones", nargs="*", default=list_backbones())
    p.add_argument("--scale", type=float, nargs=2, default=(0.35, 0.6))
    args = p.parse_args()
    per_class, epochs = ({"train": 4, "validation": 2}, {"frozen": 2, "partial": 1, "full": 1}) if args.quick \
        else ({"train": 30, "validation": 10}, {"frozen": 60, "partial": 15, "full": 6})
    n_test = 6 if args.quick else args.n_test
    size = 96 if args.quick else args.image_size
    out = Path(args.out)
    scale = tuple(args.scale)
    test = [render_pack(SEED_PRODUCTS[i % len(SEED_PRODUCTS)], np.random.default_rng([99, i]), 256, scale=scale)
            for i in range(n_test)]
    masks = [m for _, m in test]
    rows, results = [], {}
    prior = [pointing_game(centre_prior(256), m) for m in masks]
    baseline = {"pointing": float(np.mean([h for h, _ in prior])), "energy": float(np.mean([e for _, e in prior])),
                "pack_share": float(np.mean([m.mean() for m in masks]))}
    with tempfile.TemporaryDirectory() as tmp:
        data = generate_packs(tmp, per_class, size=256, seed=5, scale=scale)
        for backbone in args.backbones:
            try:
                create_backbone(backbone, True)
            except OfflineError as exc:
                results[backbone] = {"status": "not run", "reason": str(exc)}
                rows.append([backbone, "all", "not run: no ImageNet weights offline", "", "", ""])
                continue
            for freeze in ("frozen", "partial", "full"):
                start = time.time()
                clf = PillClassifier(backbone=backbone, freeze=freeze, fusion=False, image_size=size,
                                     epochs=epochs[freeze], views=1 if args.quick else 3, lr=3e-4,
                                     progress=False)
                clf.fit(data)
                hits, shares, correct = [], [], []
                for i, (img, mask) in enumerate(tqdm(test, desc=f"{backbone} {freeze}", leave=False)):
                    heat, cls = clf.image_.gradcam(img)
                    hit, share = pointing_game(heat, mask)
                    hits.append(hit)
                    shares.append(share)
                    correct.append(clf.classes_[cls] == SEED_PRODUCTS[i % len(SEED_PRODUCTS)].brand)
                    if i < 2:
                        clf.explain(img).save(out / f"explain_{backbone}_{freeze}_{i}.png")
                r = {"status": "ran", "pointing_game": float(np.mean(hits)), "energy_in_pack": float(np.mean(shares)),
                     "accuracy": float(np.mean(correct)), "seconds": time.time() - start}
                results[f"{backbone} {freeze}"] = r
                rows.append([backbone, freeze, f"{r['pointing_game']:.3f}", f"{r['energy_in_pack']:.3f}",
                             f"{r['accuracy']:.3f}", f"{r['seconds']:.0f}"])
    rows.append(["centred Gaussian (no model)", "", f"{baseline['pointing']:.3f}", f"{baseline['energy']:.3f}",
                 "", ""])
    rows.append(["uniform heatmap (no model)", "", "", f"{baseline['pack_share']:.3f}", "", ""])
    table = markdown_table(["backbone", "freeze", "pointing game", "energy in pack", "test accuracy", "seconds"],
                           rows)
    print(table)
    write_json(out, "explain" + ("_quick" if args.quick else ""),
               {"args": vars(args), "table": table, "results": results, "baselines": baseline})


if __name__ == "__main__":
    main()
