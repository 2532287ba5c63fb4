"""Speed and memory on this machine: predict latency and throughput, training time per epoch, peak RSS.

    python benchmarks/speed.py            # synthetic packs of the 10 seed products, 224 px
    python benchmarks/speed.py --quick    # fewer images, 96 px

Fused models are timed with each OCR engine in ENGINES.

Every fused prediction is timed on images the OCR cache has not seen (a cold read), since that is what a
new photo costs. Ratios compare numbers measured in this same run.
"""
from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from common import markdown_table, parser, write_json
from multipill import PillClassifier, generate_packs
from multipill.images import load_image

ENGINES = ("easyocr", "rapidocr")  # as measured in RESULTS.md (easyocr was the default engine until 2026-11-23)


class PeakRSS:
    """Samples this process's resident memory in a thread; `peak_mb` is the largest value seen."""

    def __enter__(self):
        self.proc, self.peak, self.running = psutil.Process(), 0, True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.05)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak_mb = self.peak / 2 ** 20


def latency(clf: PillClassifier, images: list, batch: int) -> dict:
    times = []
    for i in range(0, len(images) - batch + 1, batch):
        start = time.perf_counter()
        clf.predict_proba(images[i:i + batch])
        times.append(time.perf_counter() - start)
    t = np.asarray(times)
    return {"batch": batch, "calls": len(t), "median_s": float(np.median(t)), "p90_s": float(np.percentile(t, 90)),
            "images_per_s": float(batch * len(t) / t.sum())}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--image-size", type=int, default=224)
    args = p.parse_args()
    size = 96 if args.quick else args.image_size
    per_class = {"train": 6, "validation": 4, "test": 4} if args.quick else {"train": 20, "validation": 8, "test": 16}
    work = Path(tempfile.mkdtemp(prefix="multipill-speed-"))
    data = generate_packs(work / "packs", per_class, seed=7)
    test = [load_image(f) for f in sorted((data / "test").rglob("*.png"))]
    common = dict(image_size=size, epochs=2 if args.quick else 5, patience=100, views=2, progress=False)
    train_rows, results = [], {"training": {}, "predict": {}}
    models = {}
    for freeze in ("frozen", "partial", "full"):
        clf = PillClassifier(fusion=False, freeze=freeze, **common)
        with PeakRSS() as mem:
            start = time.perf_counter()
            clf.fit(data)
            total = time.perf_counter() - start
        epoch_s = [h["seconds"] for h in clf.image_.history_]
        results["training"][freeze] = {"fit_seconds": total, "median_epoch_seconds": float(np.median(epoch_s)),
                                       "setup_seconds": total - sum(epoch_s), "peak_rss_mb": mem.peak_mb}
        train_rows.append([freeze, f"{np.median(epoch_s):.2f}", f"{total - sum(epoch_s):.1f}", f"{mem.peak_mb:.0f}"])
        models[freeze] = clf
    for engine in ENGINES:
        models[f"fused ({engine})"] = PillClassifier(fusion=True, ocr=engine, ocr_cache=str(work / f"fit-{engine}"),
                                                     **common).fit(data)
    pred_rows = []
    for name in ("image-only", *(f"fused ({e})" for e in ENGINES)):
        clf = models["frozen" if name == "image-only" else name]
        for batch in (1, 8):
            clf.ocr_cache = str(work / f"cold-{name}-{batch}")  # a fresh cache: every read is cold
            with PeakRSS() as mem:
                r = latency(clf, test, batch)
            r["peak_rss_mb"] = mem.peak_mb
            results["predict"][f"{name} batch {batch}"] = r
            pred_rows.append([name, batch, f"{r['median_s'] * 1000:.0f}", f"{r['p90_s'] * 1000:.0f}",
                              f"{r['images_per_s']:.1f}", f"{mem.peak_mb:.0f}"])
    base = results["predict"]["image-only batch 1"]["median_s"]
    results["fused_over_image_latency_batch1"] = {e: results["predict"][f"fused ({e}) batch 1"]["median_s"] / base
                                                  for e in ENGINES}
    t1 = markdown_table(["freeze", "median s/epoch", "setup s (caching, weights)", "peak RSS MB"], train_rows)
    t2 = markdown_table(["model", "batch", "median ms/call", "p90 ms/call", "images/s", "peak RSS MB"], pred_rows)
    n_train = len(list((data / "train").rglob("*.png")))
    print(f"training on {n_train} images at {size}px, efficientnet_lite0\n{t1}\n\npredict on {len(test)} "
          f"test images (cold OCR)\n{t2}\nfused/image-only latency at batch 1: "
          + ", ".join(f"{e} {r:.1f}x" for e, r in results["fused_over_image_latency_batch1"].items()))
    write_json(Path(args.out), "speed" + ("_quick" if args.quick else ""),
               {"image_size": size, "n_train": n_train, "results": results, "tables": [t1, t2]})


if __name__ == "__main__":
    main()
