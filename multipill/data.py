"""Turn what users pass (datasets objects, hub names, ImageFolder paths) into image sources and label names."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar

import numpy as np

from .hub import require_hub
from .images import ImageLoadError, load_image

T, R = TypeVar("T"), TypeVar("R")
VAL_SPLITS = ("validation", "val", "valid", "dev")
CHECK_SIDE = 256  # size at which `decode` checks that an image reads


@dataclass
class Samples:
    """Undecoded images (paths or bytes) with their label names."""

    sources: list[Any]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: Sequence[int]) -> "Samples":
        return Samples([self.sources[i] for i in idx], [self.labels[i] for i in idx])


def _from_dataset(ds, image_column: str, label_column: str, folder: bool = False) -> Samples:
    import datasets
    if folder and label_column not in ds.column_names and image_column in ds.column_names:
        # imagefolder drops the label column when there is a single class folder: take it from the path
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
        sources = list(ds[image_column])
        return Samples(sources, [Path(s["path"]).parent.name for s in sources])
    for col in (image_column, label_column):
        if col not in ds.column_names:
            raise ValueError(f"column {col!r} not in the data set (columns: {ds.column_names}); "
                             "pass image_column=/label_column=")
    feature = ds.features[label_column]
    if isinstance(ds.features[image_column], datasets.Image):
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    labels = ds[label_column]
    names = feature.names if isinstance(feature, datasets.ClassLabel) else None
    return Samples(list(ds[image_column]), [names[v] if names else str(v) for v in labels])


def load_splits(data: Any, image_column: str = "image", label_column: str = "label") -> dict[str, Samples]:
    """Every split in `data`: a Dataset, DatasetDict, local ImageFolder path, or hub data set name."""
    import datasets
    if isinstance(data, Samples):
        return {"train": data}
    folder = False
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.is_dir():
            if not any(p.is_file() for p in path.rglob("*")):
                raise ValueError(f"{path}: the folder holds no files")
            try:
                data = datasets.load_dataset("imagefolder", data_dir=str(path))
                folder = True
            except Exception as exc:
                raise ValueError(f"{path}: not a readable ImageFolder (<split>/<class>/<image> or "
                                 f"<class>/<image>): {exc}") from exc
        elif path.suffix or path.is_absolute() or str(data).startswith("."):
            raise ValueError(f"{path}: no such folder")
        else:
            require_hub(f"data set {data!r}", "Pass a local ImageFolder path or a datasets.Dataset.")
            data = datasets.load_dataset(str(data))
    if isinstance(data, datasets.DatasetDict):
        return {k: _from_dataset(v, image_column, label_column, folder) for k, v in data.items()}
    if isinstance(data, datasets.Dataset):
        return {"train": _from_dataset(data, image_column, label_column, folder)}
    raise TypeError(f"cannot read training data from {type(data).__name__}")


def pick(splits: dict[str, Samples], names: Sequence[str]) -> Samples | None:
    return next((splits[n] for n in names if n in splits), None)


def per_class(labels: Sequence, n: Optional[int], seed: int) -> np.ndarray:
    """Sorted indices of at most n seeded-random items of each label (all of them when n is None)."""
    labels = np.asarray(labels)
    if n is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    idx = [i for c in sorted(set(labels.tolist())) for i in rng.permutation(np.flatnonzero(labels == c))[:n]]
    return np.sort(np.asarray(idx, int))


def stratified_split(labels: Sequence[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split; classes with a single image stay wholly in the first part."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    first, second = [], []
    for c in sorted(set(labels)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(len(idx) * fraction)) if len(idx) > 1 else 0
        n = min(max(n, 1 if len(idx) > 1 else 0), len(idx) - 1)
        second += idx[:n].tolist()
        first += idx[n:].tolist()
    return np.sort(first), np.sort(second)


class LazyImages(Sequence):
    """Images decoded each time they are read: a data set costs its list of files in memory, not its pixels."""

    def __init__(self, sources: Sequence[Any]):
        self.sources = list(sources)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int | slice) -> Any:
        return LazyImages(self.sources[i]) if isinstance(i, slice) else load_image(self.sources[i])

    def __add__(self, other: Sequence[Any]) -> "LazyImages":
        return LazyImages(self.sources + list(other.sources if isinstance(other, LazyImages) else other))


def take(images: Sequence[Any], idx: Sequence[int]) -> Sequence[Any]:
    """images[idx] for a list or a LazyImages, without decoding anything."""
    if isinstance(images, LazyImages):
        return LazyImages([images.sources[int(i)] for i in idx])
    return [images[int(i)] for i in idx]


def decode(samples: Samples, skip_bad: bool = True) -> tuple[LazyImages, list[str], list[str]]:
    """The readable images, decoded when used; bad ones are skipped with a warning naming each file (or raised).
    Each image is checked once here by decoding it at reduced size (JPEGs decode at an eighth: every byte is
    still read, so truncated files are caught) and then dropped, so memory does not grow with the data set."""
    sources, labels, bad = [], [], []
    for src, label in zip(samples.sources, samples.labels):
        try:
            load_image(src, max_side=CHECK_SIDE)
            sources.append(src)
            labels.append(label)
        except ImageLoadError as exc:
            if not skip_bad:
                raise
            bad.append(str(exc))
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s): " + "; ".join(bad[:10]))
    return LazyImages(sources), labels, bad


def prefetch(fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
    """fn(item) for each item in order, the next one computed in a background thread while the caller works on
    this one: decoding and resizing photos overlaps the model (both release the GIL)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="multipill-prefetch") as pool:
        ahead = pool.submit(fn, items[0]) if len(items) else None
        for k in range(len(items)):
            current = ahead.result()
            if k + 1 < len(items):
                ahead = pool.submit(fn, items[k + 1])
            yield current
