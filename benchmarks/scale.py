"""Memory and speed against data size: synthetic packs at 1k, 5k and 20k photos, each size in its own process.

    python benchmarks/scale.py                  # 1,000 / 5,000 / 20,000 photos at 224 px (over an hour on 2 cores)
    python benchmarks/scale.py --image-size 96  # the same at 96 px: memory alike, about five times faster
    python benchmarks/scale.py --quick          # 100 / 200 photos at 96 px: checks the script end to end

Each size: synthetic packs of the ten seed products (80% train, 10% validation, 10% test, 256 px PNG), an
image-only frozen EfficientNet-Lite0 (224 px, one cached view, 3 epochs) fitted and evaluated in a fresh
process, twice: first with an empty activation cache, then again with the cache the first run wrote ("warm").
Reported for each: the process's peak resident memory, photos/s through everything `fit` does besides the
epochs (checking each photo, decoding it and caching the frozen trunk's activations, calibration), median seconds
per epoch, photos/s evaluating the test split. Images are decoded when used (`multipill.data.LazyImages`) and
activations are kept on disk and read memory-mapped (`multipill.activations`), so memory should not grow with the
number of photos; the target is peak memory at 20k within 15% of 1k.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import markdown_table, parser, write_json


def child(data: Path, image_size: int) -> dict:
    """Fit and evaluate at one size; runs in its own process so peak memory is this size's alone."""
    from multipill import PillClassifier
    start = time.perf_counter()
    clf = PillClassifier(fusion=False, views=1, epochs=3, patience=3, image_size=image_size,
                         progress=False).fit(data)
    fit_s = time.perf_counter() - start
    history = clf.image_.history_
    train_s = sum(h["seconds"] for h in history)
    n_train = sum(1 for _ in (data / "train").rglob("*.png"))
    n_val = sum(1 for _ in (data / "validation").rglob("*.png"))
    start = time.perf_counter()
    report = clf.evaluate(data, split="test")
    predict_s = time.perf_counter() - start
    return {"train_photos": n_train, "fit_seconds": round(fit_s, 1),
            "fit_photos_per_s_besides_epochs": round((n_train + n_val) / max(fit_s - train_s, 1e-9), 1),
            "epoch_seconds": round(sorted(h["seconds"] for h in history)[len(history) // 2], 2),
            "test_photos": report["n"], "predict_photos_per_s": round(report["n"] / predict_s, 1),
            "accuracy": round(report["image"]["accuracy"], 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sizes", default="1000,5000,20000", help="comma-separated numbers of photos")
    p.add_argument("--image-size", type=int, default=224, help="model input size (96 with --quick)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one size, in its own process
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child), args.image_size)))
        return
    from multipill import generate_packs
    sizes = [100, 200] if args.quick else [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="multipill-scale-"))
    rows, runs = [], []
    for n in sizes:
        per_class = n // 10
        split = {"train": per_class * 8 // 10, "validation": per_class // 10, "test": per_class // 10}
        start = time.perf_counter()
        data = generate_packs(work / f"packs_{n}", split, size=256, seed=n)
        generated = time.perf_counter() - start
        size = 96 if args.quick else args.image_size
        env = {**os.environ, "MULTIPILL_CACHE": str(work / f"cache_{n}")}  # empty for the first run
        run: dict = {"photos": n, "generate_seconds": round(generated, 1)}
        for cache in ("cold", "warm"):
            proc = subprocess.run([sys.executable, __file__, "--child", str(data), "--image-size", str(size)],
                                  capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-3000:])
            run[cache] = json.loads(proc.stdout.splitlines()[-1])
            r = run[cache]
            rows.append([n, cache, r["peak_rss_mb"], r["fit_seconds"], r["fit_photos_per_s_besides_epochs"],
                         r["epoch_seconds"], r["predict_photos_per_s"], r["accuracy"]])
            print(rows[-1], flush=True)
        run["warm_fit_speedup"] = round(run["cold"]["fit_seconds"] / run["warm"]["fit_seconds"], 2)
        runs.append(run)
    growth = runs[-1]["cold"]["peak_rss_mb"] / runs[0]["cold"]["peak_rss_mb"] - 1
    table = markdown_table(["photos", "activation cache", "peak RSS MB", "fit s", "fit photos/s (besides epochs)",
                            "s/epoch", "predict photos/s", "accuracy"], rows)
    speedups = ", ".join(f"{r['photos']}: {r['warm_fit_speedup']}x" for r in runs)
    print(f"{table}\n\npeak memory from {sizes[0]} to {sizes[-1]} photos: {growth:+.1%} (target within 15%)\n"
          f"fit with the activation cache warm, times faster than cold: {speedups}")
    path = write_json(Path(args.out), "scale_quick" if args.quick else "scale",
                      {"image_size": 96 if args.quick else args.image_size, "runs": runs,
                       "memory_growth": round(growth, 4), "table": table})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
