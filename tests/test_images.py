import io

import numpy as np
import pytest
from PIL import Image

from multipill.images import MAX_SIDE, ImageLoadError, load_image


def _save(path, img, **kw):
    img.save(path, **kw)
    return path


def test_zero_byte_file_names_the_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty.jpg"):
        load_image(p)


def test_non_image_and_corrupt_files(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageLoadError, match="notes.png"):
        load_image(text)
    good = _save(tmp_path / "good.jpg", Image.new("RGB", (64, 64), "red"))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ImageLoadError, match="truncated.jpg"):
        load_image(truncated)
    with pytest.raises(ImageLoadError, match="missing.png"):
        load_image(tmp_path / "missing.png")


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "I;16", "1"])
def test_modes_become_rgb(tmp_path, mode):
    img = Image.new("RGB", (40, 30), (200, 50, 10)).convert(mode) if mode != "I;16" else \
        Image.fromarray((np.arange(1200).reshape(30, 40) * 50).astype(np.uint16))
    ext = "tif" if mode in ("CMYK", "I;16") else "png"
    out = load_image(_save(tmp_path / f"x.{ext}", img))
    assert out.mode == "RGB" and out.size == (40, 30)
    if mode == "I;16":  # 16-bit is rescaled, not clipped to white
        arr = np.asarray(out)
        assert arr.min() == 0 and arr.max() == 255


def test_rgba_transparent_composited_on_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(load_image(img))[0, 0].tolist() == [255, 255, 255]


def test_tiny_and_very_large_images(tmp_path):
    assert load_image(_save(tmp_path / "one.png", Image.new("RGB", (1, 1)))).size == (1, 1)
    big = load_image(Image.new("RGB", (MAX_SIDE * 2, 100)))
    assert big.size == (MAX_SIDE, 50)


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (60, 20), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif)
    assert load_image(p).size == (20, 60)


def test_arrays_bytes_and_bad_arrays():
    assert load_image(np.zeros((5, 7, 3), np.uint8)).size == (7, 5)
    assert load_image(np.ones((5, 7), np.float32)).size == (7, 5)
    buf = io.BytesIO()
    Image.new("RGB", (3, 3)).save(buf, format="PNG")
    assert load_image({"bytes": buf.getvalue(), "path": None}).size == (3, 3)
    with pytest.raises(ImageLoadError, match="shape"):
        load_image(np.zeros((2, 2, 2, 2)))
