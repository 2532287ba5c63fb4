"""The image branch on ONNX Runtime against PyTorch, on real photos: throughput, latency, same answers.

    python benchmarks/onnx_speed.py            # drug-vision: frozen Lite0 on 50 train photos per class, 320 val photos
    python benchmarks/onnx_speed.py --quick    # a few photos: checks the script end to end

One image-only model is trained (frozen EfficientNet-Lite0, 224 px), saved, exported with `multipill export`, and
loaded twice: with the export (ONNX Runtime) and without (PyTorch). Both predict the same decoded `val` photos at
batch 1 and 32, alternating runs in one process; reported per row: median and p90 seconds per call, photos/s,
and the ONNX / PyTorch throughput ratio, with the largest logit difference and whether every answer is the same.
Decoding is outside the timing (the photos are decoded once); resizing and normalising are inside.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from common import SHARED, markdown_table, parser, subsample, write_json
from multipill import PillClassifier
from multipill.data import VAL_SPLITS, decode, load_splits, pick


def timed(clf: PillClassifier, images: list, batch: int, repeats: int) -> np.ndarray:
    """Seconds per call of the image branch over consecutive batches, `repeats` passes."""
    t = []
    for _ in range(repeats):
        for i in range(0, len(images) - batch + 1, batch):
            start = time.perf_counter()
            clf.image_.predict(images[i:i + batch])
            t.append(time.perf_counter() - start)
    return np.array(t)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", default=str(SHARED / "drug-vision"))
    args = p.parse_args()
    splits = load_splits(args.data)
    train = subsample(splits["train"], 5 if args.quick else 50, 0)
    val = subsample(pick(splits, VAL_SPLITS), 2 if args.quick else 32, 1)
    work = Path(tempfile.mkdtemp(prefix="multipill-onnx-"))
    PillClassifier(fusion=False, views=1, epochs=3 if args.quick else 30, image_size=96 if args.quick else 224,
                   progress=False).fit(train).save(work / "model")
    PillClassifier.load(work / "model").export_onnx(work / "exported")
    torch_model, onnx_model = PillClassifier.load(work / "model"), PillClassifier.load(work / "exported")
    assert torch_model.image_.onnx_ is None and onnx_model.image_.onnx_ is not None
    images = list(decode(val)[0])  # decoded once, here: the timing below is the image branch's alone
    ref, got = torch_model.image_.predict(images)[0], onnx_model.image_.predict(images)[0]
    rows, result = [], {"n_photos": len(images), "max_abs_logit_difference": float(np.abs(ref - got).max()),
                        "same_answers": bool((ref.argmax(1) == got.argmax(1)).all()), "rows": {}}
    for batch in (1, min(32, len(images))):
        runs = {"PyTorch": [], "ONNX Runtime": []}
        for _ in range(2):  # alternate, so both meet the same machine load
            for name, clf in (("PyTorch", torch_model), ("ONNX Runtime", onnx_model)):
                runs[name].append(timed(clf, images, batch, 1))
        for name, parts in runs.items():
            t = np.concatenate(parts)
            r = {"median_s": float(np.median(t)), "p90_s": float(np.percentile(t, 90)),
                 "photos_per_s": float(batch * len(t) / t.sum())}
            result["rows"][f"{name} batch {batch}"] = r
        ratio = result["rows"][f"ONNX Runtime batch {batch}"]["photos_per_s"] / \
            result["rows"][f"PyTorch batch {batch}"]["photos_per_s"]
        result[f"onnx_over_pytorch_batch{batch}"] = ratio
        for name in runs:
            r = result["rows"][f"{name} batch {batch}"]
            rows.append([name, batch, f"{r['median_s'] * 1000:.1f}", f"{r['p90_s'] * 1000:.1f}",
                         f"{r['photos_per_s']:.1f}", f"{ratio:.2f}x" if name == "ONNX Runtime" else ""])
    table = markdown_table(["image branch", "batch", "median ms/call", "p90 ms/call", "photos/s",
                            "ONNX / PyTorch throughput"], rows)
    print(f"{len(images)} {Path(args.data).name} val photos; largest logit difference "
          f"{result['max_abs_logit_difference']:.2e}; same answers: {result['same_answers']}\n{table}")
    write_json(Path(args.out), "onnx_speed" + ("_quick" if args.quick else ""), {"table": table, **result})


if __name__ == "__main__":
    main()
