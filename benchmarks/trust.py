"""Trust on real data: calibration, abstention and not-a-known-product detection, both ways round.

    python benchmarks/trust.py            # full: what RESULTS.md reports
    python benchmarks/trust.py --quick    # small subsets, checks the script only

Model D is trained on drug-vision (default: the saved best model, `--drug-model`; models saved before
calibration existed are calibrated here), model G on grocery-packages `train` (frozen EfficientNet-Lite0 with
OCR fusion). Each model's `val` images are split in two halves: temperatures and the abstention threshold are
fitted on half A, every number below is measured on half B. Unknown products: the other data set's images,
synthetic packs of made-up brands, and blank or noise images. AUROC says how well each score ranks unknown
above known images; "answered" is the share of unknown images that still got a label (all of them wrong).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from common import SHARED, markdown_table, parser, subsample, write_json
from multipill import PillClassifier
from multipill.data import VAL_SPLITS, Samples, decode, load_splits, pick, stratified_split
from multipill.plots import reliability_png, risk_coverage_png
from multipill.synthetic import fictional_products, render_pack


def halves(samples: Samples, seed: int = 0) -> tuple[Samples, Samples]:
    a, b = stratified_split(samples.labels, 0.5, seed)
    return samples.subset(sorted(a)), samples.subset(sorted(b))


def blanks(n: int, seed: int = 0) -> list[Image.Image]:
    """Empty tables: flat colours, gradients and noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if i % 3 == 0:
            arr = np.full((256, 256, 3), rng.integers(0, 256, 3), np.uint8)
        elif i % 3 == 1:
            arr = np.linspace(rng.integers(0, 256, 3), rng.integers(0, 256, 3), 256)[:, None, :].repeat(256, 1)
        else:
            arr = rng.integers(0, 256, (256, 256, 3))
        out.append(Image.fromarray(np.asarray(arr, np.uint8)))
    return out


def unknown_sets(other: Samples, n_other: int, n_synthetic: int, n_blank: int) -> dict[str, list]:
    rng = np.random.default_rng(0)
    products = fictional_products(12, seed=1)
    synthetic = [render_pack(products[i % len(products)], np.random.default_rng([7, i]))[0]
                 for i in range(n_synthetic)]
    other_images, _, _ = decode(other.subset(sorted(rng.permutation(len(other.labels))[:n_other])))
    return {"other data set": other_images, "unseen synthetic brands": synthetic, "blank / noise": blanks(n_blank)}


def scores(clf: PillClassifier, images: list) -> dict[str, np.ndarray]:
    out = clf._run(images)
    return {"confidence": np.exp(out["final"].max(1)), "novelty": out["novelty"], "abstained": out["abstained"]}


def assess(name: str, clf: PillClassifier, known_eval: Samples, unknown: dict[str, list], out: Path) -> dict:
    """Calibration and abstention on known half B; AUROC and wrongly-answered share on each unknown set."""
    report = clf.evaluate(known_eval)
    reliability_png(report["calibration"]["answer"], out / f"trust_{name}_reliability.png",
                    f"{name}: reliability (half B)")
    risk_coverage_png(report["abstention"], out / f"trust_{name}_risk_coverage.png", f"{name}: risk-coverage")
    known_images, _ = clf._known(known_eval, None, True)
    known = scores(clf, known_images)
    ood = {}
    for set_name, images in unknown.items():
        s = scores(clf, images)
        labels = np.r_[np.zeros(len(known["novelty"])), np.ones(len(s["novelty"]))]
        ood[set_name] = {
            "n": len(images),
            "auroc_1_minus_confidence": float(roc_auc_score(labels, np.r_[-known["confidence"], -s["confidence"]])),
            "auroc_novelty": float(roc_auc_score(labels, np.r_[known["novelty"], s["novelty"]])),
            "answered_share": float((~s["abstained"]).mean()),
            "mean_confidence": float(s["confidence"].mean())}
    return {"calibration": report["calibration"],
            "abstention": {k: v for k, v in report["abstention"].items() if k != "risk_coverage"},
            "known_accuracy": report["fused" if "fused" in report else "image"]["accuracy"],
            "known_abstained_share": float(known["abstained"].mean()), "unknown": ood}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--drug-model", default=str(Path(__file__).parent / "results" / "best_model"))
    p.add_argument("--ocr", default="easyocr")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    drug, grocery = load_splits(SHARED / "drug-vision"), load_splits(SHARED / "grocery-packages")
    g_val = pick(grocery, VAL_SPLITS)
    n_other, n_syn, n_blank = (8, 4, 3) if args.quick else (200, 120, 30)
    results = {}
    start = time.time()

    # model D: drug-vision
    d_train, d_val = drug["train"], pick(drug, VAL_SPLITS)
    if args.quick:
        d_train, d_val = subsample(d_train, 10, 0), subsample(d_val, 6, 0)
    d_a, d_b = halves(d_val)
    if not args.quick and (Path(args.drug_model) / "multipill.json").exists():
        model_d = PillClassifier.load(args.drug_model)
    else:
        model_d = PillClassifier(fusion=False, image_size=96 if args.quick else 224,
                                 epochs=3 if args.quick else 100, views=1 if args.quick else 4)
        model_d.fit(d_train, d_a)
    model_d.calibrate(d_a, reference=subsample(d_train, 100, 0))
    g_all = Samples(grocery["train"].sources + g_val.sources, grocery["train"].labels + g_val.labels)
    results["trained on drug-vision"] = assess("drug-vision", model_d, d_b,
                                               unknown_sets(g_all, n_other, n_syn, n_blank), out)

    # model G: grocery-packages, trained on all of train; calibrated and measured on val only, the photos from
    # other shop visits (a held-out tail of train comes from the training visits: see fusion.py)
    g_train, g_held = grocery["train"], g_val
    if args.quick:
        keep = sorted(set(g_train.labels))[:4]
        g_train = subsample(g_train.subset([i for i, c in enumerate(g_train.labels) if c in keep]), 5, 0)
        g_held = subsample(g_held.subset([i for i, c in enumerate(g_held.labels) if c in keep]), 4, 0)
    g_a, g_b = halves(g_held)
    model_g = PillClassifier(ocr=args.ocr, image_size=96 if args.quick else 224,
                             epochs=3 if args.quick else 100, views=1 if args.quick else 4)
    model_g.fit(g_train, g_a)
    results["trained on grocery-packages"] = assess("grocery", model_g, g_b,
                                                    unknown_sets(d_val, n_other, n_syn, n_blank), out)

    rows_cal, rows_ood = [], []
    for model, r in results.items():
        a, c = r["abstention"], r["calibration"]
        rows_cal.append([model, f"{r['known_accuracy']:.3f}", f"{c['answer']['ece_before']:.3f}",
                         f"{c['answer']['ece_after']:.3f}", f"{a['threshold']:.3f}", f"{a['coverage']:.3f}",
                         "n/a" if a["answered_accuracy"] is None else f"{a['answered_accuracy']:.3f}"])
        for set_name, o in r["unknown"].items():
            rows_ood.append([model, set_name, str(o["n"]), f"{o['auroc_1_minus_confidence']:.3f}",
                             f"{o['auroc_novelty']:.3f}", f"{o['answered_share']:.3f}"])
    table = markdown_table(["model", "accuracy (half B)", "ECE before", "ECE after", "threshold", "coverage",
                            "accuracy on answered"], rows_cal)
    table_ood = markdown_table(["model", "unknown images", "n", "AUROC 1-confidence", "AUROC novelty",
                                "wrongly answered"], rows_ood)
    print(table + "\n\n" + table_ood + f"\n\n{time.time() - start:.0f}s")
    write_json(out, "trust" + ("_quick" if args.quick else ""),
               {"args": vars(args), "table": table, "table_unknown": table_ood, "results": results})


if __name__ == "__main__":
    main()
