"""Synthetic packaging photos: the offline demo's data and the tests' fixtures (no real packs ship)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .products import SEED_PRODUCTS, STYLES, Product

KINDS = ("box", "blister", "bottle")


def _font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled scalable font, so rendering needs no system fonts."""
    return ImageFont.load_default(size=size)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, max_size: int) -> ImageFont.ImageFont:
    """Largest font up to max_size whose rendering of text fits in width."""
    size = max_size
    while size > 8:
        font = _font(size)
        if draw.textlength(text, font=font) <= width:
            return font
        size -= 2
    return _font(8)


def _centered(draw: ImageDraw.ImageDraw, y: int, width: int, text: str, font, fill) -> None:
    w = draw.textlength(text, font=font)
    draw.text(((width - w) / 2, y), text, font=font, fill=fill)


def _label(product: Product, w: int, h: int, colours: dict, rng: np.random.Generator) -> Image.Image:
    """The printed face: brand on a band, then ingredients and strength; same layout per style."""
    img = Image.new("RGBA", (w, h), colours["body"] + (255,))
    d = ImageDraw.Draw(img)
    band_top, band_h = int(h * 0.12), int(h * 0.36)
    d.rectangle([0, band_top, w, band_top + band_h], fill=colours["band"] + (255,))
    brand = product.brand.upper()
    _centered(d, band_top + band_h * 0.15, w, brand,
              _fit_text(d, brand, int(w * 0.9), int(band_h * 0.75)), colours["ink"])
    small_ink = (255, 255, 255) if sum(colours["body"]) < 450 else (20, 20, 20)
    lines = [" + ".join(product.ingredients), product.strength, product.form.title()]
    y = band_top + band_h + h * 0.05
    for line in lines:
        font = _fit_text(d, line, int(w * 0.9), max(10, int(h * 0.11)))
        _centered(d, y, w, line, font, small_ink)
        y += font.size * 1.25
    return img


def _box(product: Product, colours: dict, rng: np.random.Generator) -> Image.Image:
    w = int(rng.integers(300, 360))
    return _label(product, w, int(w * rng.uniform(0.55, 0.7)), colours, rng)


def _blister(product: Product, colours: dict, rng: np.random.Generator) -> Image.Image:
    """Silver foil with pill cavities and the brand printed in the style's ink between them."""
    w, h = int(rng.integers(300, 360)), int(rng.integers(190, 230))
    foil = int(rng.integers(185, 215))
    img = Image.new("RGBA", (w, h), (foil, foil, foil + 8, 255))
    d = ImageDraw.Draw(img)
    for row in (0.08, 0.7):
        for i in range(5):
            x = w * (0.06 + i * 0.18)
            d.ellipse([x, h * row, x + w * 0.13, h * row + h * 0.22], fill=colours["body"] + (255,),
                      outline=(120, 120, 130, 255), width=2)
    brand = product.brand.upper()
    d.rectangle([0, h * 0.33, w, h * 0.67], fill=colours["band"] + (255,))
    _centered(d, h * 0.35, w, brand, _fit_text(d, brand, int(w * 0.85), int(h * 0.2)), colours["ink"])
    _centered(d, h * 0.56, w, product.strength, _font(max(10, int(h * 0.08))), colours["ink"])
    return img


def _bottle(product: Product, colours: dict, rng: np.random.Generator) -> Image.Image:
    """A bottle silhouette with a cap and a wrap-around label."""
    w, h = int(rng.integers(220, 260)), int(rng.integers(320, 360))
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rectangle([w * 0.3, 0, w * 0.7, h * 0.14], fill=(235, 235, 235, 255))
    d.rounded_rectangle([0, h * 0.12, w - 1, h - 1], radius=int(w * 0.15), fill=colours["body"] + (255,))
    label = _label(product, w - 16, int(h * 0.55), colours, rng)
    img.alpha_composite(label, (8, int(h * 0.3)))
    return img


def _background(size: int, rng: np.random.Generator) -> Image.Image:
    """Tables, cloth and clutter: a gradient with random shapes and noise."""
    base = rng.integers(60, 230, size=3)
    other = rng.integers(30, 255, size=3)
    t = np.linspace(0, 1, size)[:, None, None]
    arr = base * (1 - t) + other * t
    arr = np.repeat(arr, size, axis=1)
    img = Image.fromarray(arr.astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 7))):
        x0, y0 = rng.integers(0, size, 2)
        x1, y1 = x0 + rng.integers(10, size // 2), y0 + rng.integers(10, size // 2)
        fill = tuple(int(c) for c in rng.integers(0, 255, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x1, y1], fill=fill)
    noise = rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(img, float) + noise, 0, 255).astype(np.uint8))


def _perspective_coeffs(src: np.ndarray, dst: np.ndarray) -> list[float]:
    """Coefficients PIL's PERSPECTIVE transform needs to map dst corners back to src corners."""
    a = []
    for (xs, ys), (xd, yd) in zip(src, dst):
        a.append([xd, yd, 1, 0, 0, 0, -xs * xd, -xs * yd])
        a.append([0, 0, 0, xd, yd, 1, -ys * xd, -ys * yd])
    return np.linalg.solve(np.array(a, float), src.reshape(8)).tolist()


def render_pack(product: Product, rng: np.random.Generator, size: int = 256,
                kind: str | None = None, upright: bool = False,
                scale: tuple[float, float] = (0.7, 0.92)) -> tuple[Image.Image, np.ndarray]:
    """One photo of product's pack, its longer side a `scale` share of the photo; image and pack mask."""
    colours = dict(STYLES[product.style])
    jitter = rng.integers(-15, 16, 3)
    colours["body"] = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(colours["body"], jitter))
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    item = {"box": _box, "blister": _blister, "bottle": _bottle}[kind](product, colours, rng)
    if not upright:
        angle = float(rng.uniform(-25, 25))
        if rng.random() < 0.15:
            angle += float(rng.choice([90, 180, 270]))
        item = item.rotate(angle, expand=True, resample=Image.BICUBIC)
    factor = rng.uniform(*scale) * size / max(item.size)
    item = item.resize((max(1, int(item.width * factor)), max(1, int(item.height * factor))), Image.BICUBIC)
    w, h = item.size
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
    dst = src + rng.uniform(-0.08, 0.08, (4, 2)) * [w, h]
    dst -= dst.min(axis=0)
    out_w, out_h = int(np.ceil(dst[:, 0].max())), int(np.ceil(dst[:, 1].max()))
    item = item.transform((out_w, out_h), Image.PERSPECTIVE, _perspective_coeffs(src, dst), Image.BICUBIC)
    canvas = _background(size, rng)
    x = int(rng.integers(0, max(1, size - out_w + 1)))
    y = int(rng.integers(0, max(1, size - out_h + 1)))
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    layer.alpha_composite(item.crop((0, 0, min(out_w, size - x), min(out_h, size - y))), (x, y))
    canvas.paste(layer, (0, 0), layer)
    mask = np.asarray(layer)[:, :, 3] > 127
    light = np.linspace(rng.uniform(0.6, 1.0), rng.uniform(1.0, 1.3), size)
    arr = np.asarray(canvas, float) * (light[None, :, None] if rng.random() < 0.5 else light[:, None, None])
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 1.0))))
    return img, mask


def generate_packs(out_dir: str | Path, n_per_class: int | dict[str, int] = 40,
                   products: tuple[Product, ...] = SEED_PRODUCTS, size: int = 256,
                   seed: int = 0, scale: tuple[float, float] = (0.7, 0.92)) -> Path:
    """Write an ImageFolder (`<split>/<brand>/<i>.png`); n_per_class is an int or {split: n}."""
    out = Path(out_dir)
    splits = n_per_class if isinstance(n_per_class, dict) else {"train": n_per_class}
    for s_idx, (split, n) in enumerate(splits.items()):
        for c_idx, product in enumerate(products):
            folder = out / split / product.brand
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rng = np.random.default_rng([seed, s_idx, c_idx, i])
                img, _ = render_pack(product, rng, size, scale=scale)
                img.save(folder / f"{i:04d}.png")
    return out


def fictional_products(n: int, seed: int = 0) -> tuple[Product, ...]:
    """Made-up brands in the seed's pack styles: products no model was trained on, for novelty tests."""
    rng = np.random.default_rng(seed)
    syllables = ["zo", "ra", "vex", "li", "tan", "mor", "qui", "del", "fen", "ost", "ka", "nu"]
    substances = ["Loratadine", "Cetirizine", "Naproxen", "Ambroxol", "Guaifenesin", "Omeprazole"]
    styles = sorted(STYLES)
    return tuple(Product("".join(rng.choice(syllables, 3)).title(), (str(rng.choice(substances)),),
                         f"{int(rng.choice([5, 10, 20, 250]))}mg", "tablet", styles[i % len(styles)])
                 for i in range(n))
