"""The offline demo: synthetic packs of the seed's products, image-only vs fused, side by side."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .classifier import PillClassifier
from .cli import format_table
from .plots import branches_png, confusion_png, history_png
from .products import SEED_PRODUCTS
from .synthetic import generate_packs


def run_demo(out: str | Path = "multipill_runs/demo", quick: bool = False) -> dict:
    """Generate data, fit both models, evaluate on a held-out synthetic test split, predict one image."""
    out = Path(out)
    products = SEED_PRODUCTS if not quick else tuple(
        p for p in SEED_PRODUCTS if p.brand in ("Bioflu", "Neozep", "Decolgen", "Biogesic"))
    sizes = {"train": 10, "validation": 6, "test": 6} if quick else {"train": 20, "validation": 10, "test": 10}
    data = generate_packs(out / "data", sizes, products=products, size=256, seed=0)
    print(f"synthetic packs: {sizes} per class, {len(products)} products -> {data}")
    common = dict(image_size=160, views=3, epochs=60, patience=10,
                  ocr_cache=str(out / "ocr-cache"))
    results = {}
    for name, fusion in (("image-only", False), ("fused", True)):
        start = time.time()
        clf = PillClassifier(fusion=fusion, **common).fit(data)
        results[name] = clf.evaluate(data, split="test")
        results[name]["fit_and_eval_seconds"] = round(time.time() - start, 1)
        clf.save(out / ("model" if fusion else "model-image-only"))
        print(f"\n== {name} model on the synthetic test split ==\n{format_table(results[name])}")
    fused = results["fused"]
    scores = {"image-only": results["image-only"]["image"]["accuracy"], "text-only": fused["text"]["accuracy"],
              "fused": fused["fused"]["accuracy"]}
    branches_png(scores, out / "branches.png", "synthetic packs, test split")
    confusion_png(fused["fused"]["confusion_matrix"], fused["classes"], out / "confusion_fused.png", "fused")
    confusion_png(results["image-only"]["image"]["confusion_matrix"], fused["classes"],
                  out / "confusion_image_only.png", "image-only")
    history_png(clf.image_.history_, out / "training_curves.png")
    example = sorted((data / "test" / "Neozep").glob("*.png"))[0] if not quick else \
        sorted((data / "test" / "Bioflu").glob("*.png"))[0]
    pred = clf.predict(example)
    print(f"\npredict({example.name} of {example.parent.name}): {pred.label} ({pred.confidence:.3f}, "
          f"from {pred.source}); OCR read {pred.text!r}; image-only top: "
          f"{max(pred.image_proba, key=pred.image_proba.get)}")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults, plots and saved models in {out}/ (results.json, branches.png, confusion_*.png)")
    print("These are synthetic packs; real benchmarks run on real photos: see benchmarks/.")
    return results
