"""Load any image a user may hand us (path, bytes, PIL, numpy) as upright 8-bit RGB, or say which file failed."""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps

ImageInput = Union[str, Path, bytes, Image.Image, np.ndarray, dict]
MAX_SIDE = 4096  # larger photos are reduced on load: no model here needs more, and memory stays bounded


class ImageLoadError(ValueError):
    """An input that is not a readable image; the message names the file."""


def describe(source: Any) -> str:
    """A short name for an input, for error messages."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, dict):
        return str(source.get("path") or "<image bytes>")
    return f"<{type(source).__name__}>"


def _to_rgb(img: Image.Image) -> Image.Image:
    """Normalise mode: 16-bit and float scaled to 8 bits, alpha composited on white, CMYK/P/LA converted."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def _from_array(arr: np.ndarray) -> Image.Image:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or arr.size == 0:
        raise ImageLoadError(f"array of shape {arr.shape} is not an HxW, HxWx3 or HxWx4 image")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255
        elif arr.max() > 255:
            arr = arr / arr.max() * 255
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def load_image(source: ImageInput, max_side: int = MAX_SIDE) -> Image.Image:
    """Decode fully (so truncation surfaces here), apply EXIF orientation, bound the size to `max_side`, return
    RGB."""
    if isinstance(source, Image.Image):
        img = source
    elif isinstance(source, np.ndarray):
        img = _from_array(source)
    else:
        if isinstance(source, dict):  # a datasets Image(decode=False) cell
            source = source.get("bytes") or source.get("path")
        if not isinstance(source, (bytes, bytearray, str, Path)):
            raise ImageLoadError(f"{describe(source)} is not an image: expected a path, bytes, a PIL image, a "
                                 "numpy array or a datasets image cell")
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise ImageLoadError("empty image bytes")
            fp: Any = io.BytesIO(source)
        else:
            path = Path(source)
            if not path.is_file():
                raise ImageLoadError(f"{path}: no such file")
            if path.stat().st_size == 0:
                raise ImageLoadError(f"{path}: file is empty (0 bytes)")
            fp = path
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(fp)
                img.draft("RGB", (max_side, max_side))
                img.load()
        except Exception as exc:  # PIL raises many types for bad files
            raise ImageLoadError(f"{describe(source)}: not a readable image ({exc})") from exc
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose an otherwise good image
        pass
    img = _to_rgb(img)
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.BILINEAR)
    return img
