"""Frozen-trunk activations kept on disk and read memory-mapped, so training data costs no RAM and later runs
and configurations on the same photos skip the trunk (and the decoding) entirely.

A store is one folder per trunk setting (backbone weights, input size, pooling, augmentation settings, number
type), named by their hash. Inside, each writing process appends to its own segment: `<id>.rows` (raw rows) and
`<id>.keys` (one key per line, written after its row). A key is the image's content hash and its view ("eval",
or the n-th augmented view, which is drawn from a seed derived from the image and n, so it is the same in every
run). An interrupted write leaves at most a torn last row or line, which readers ignore: nothing written before
is lost.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .files import cache_root, sha256, write_text_atomic

Ref = tuple[int, int]  # (segment, row)


def default_activation_dir() -> Path:
    return cache_root() / "activations"


def content_key(source: Any) -> str:
    """Hash of what an image is made of: a file's bytes, raw bytes, or a decoded image's pixels."""
    from PIL import Image
    if isinstance(source, dict):  # a datasets Image(decode=False) cell
        source = source.get("bytes") or source.get("path")
    if isinstance(source, (str, Path)):
        return sha256(source)[:32]
    h = hashlib.sha256()
    if isinstance(source, (bytes, bytearray)):
        h.update(source)
    elif isinstance(source, Image.Image):
        h.update(f"{source.mode}{source.size}".encode())
        h.update(source.tobytes())
    else:
        h.update(np.ascontiguousarray(source).tobytes())
    return h.hexdigest()[:32]


def view_seed(key: str, view: int, seed: int) -> int:
    """The seed of one augmented view of one image: the same in every run, whatever else is in the data set."""
    return int.from_bytes(hashlib.sha256(f"{key}:{view}:{seed}".encode()).digest()[:8], "little") >> 1


class ActivationStore:
    """Activation rows by key, in memory (`directory=None`) or on disk in append-only, memory-mapped segments."""

    def __init__(self, directory: Optional[str | Path], settings: dict, row_shape: Sequence[int],
                 dtype: str = "float16"):
        self.row_shape, self.dtype = tuple(int(s) for s in row_shape), np.dtype(dtype)
        self._row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        settings = {**settings, "row_shape": self.row_shape, "dtype": self.dtype.name}
        self._index: dict[str, Ref] = {}
        self._segments: list[Any] = []  # on disk: segment file stems; in memory: lists of rows
        self._maps: dict[int, np.memmap] = {}
        self._writer: Optional[int] = None
        self._written = (0, 0)  # this store's own segment: rows, and bytes of keys, written whole
        self.directory = None
        if directory is not None:
            digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
            self.directory = Path(directory) / digest
            self.directory.mkdir(parents=True, exist_ok=True)
            meta = self.directory / "settings.json"
            if not meta.exists():
                write_text_atomic(meta, json.dumps(settings, indent=1))
            self.refresh()

    def refresh(self) -> None:
        """Index every complete row on disk, including those other processes wrote since."""
        if self.directory is None:
            return
        for keys_file in sorted(self.directory.glob("*.keys")):
            stem = keys_file.with_suffix("")
            if str(stem) in self._segments:
                seg = self._segments.index(str(stem))
            else:
                self._segments.append(str(stem))
                seg = len(self._segments) - 1
            text = keys_file.read_text(encoding="ascii", errors="replace")
            keys = text.split("\n")[:-1]  # a line without its newline is torn: ignored
            rows = os.path.getsize(f"{stem}.rows") // self._row_bytes if os.path.exists(f"{stem}.rows") else 0
            for r, k in enumerate(keys[:rows]):
                self._index.setdefault(k, (seg, r))

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def find(self, keys: Sequence[str]) -> list[Optional[Ref]]:
        return [self._index.get(k) for k in keys]

    def add(self, keys: Sequence[str], rows: np.ndarray) -> None:
        """Append rows (one per key); on disk the rows are written before their keys, and whatever a failed
        earlier write of this store left past its last complete key is cut first, so rows and keys stay aligned."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype).reshape(len(keys), *self.row_shape)
        if self._writer is None:
            stem = str(self.directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}") if self.directory else []
            self._segments.append(stem)
            self._writer = len(self._segments) - 1
        seg = self._writer
        if self.directory is None:
            start = len(self._segments[seg])
            self._segments[seg].extend(rows)
        else:
            stem = self._segments[seg]
            start, key_bytes = self._written
            for suffix, size in ((".rows", start * self._row_bytes), (".keys", key_bytes)):
                if os.path.exists(stem + suffix) and os.path.getsize(stem + suffix) != size:
                    os.truncate(stem + suffix, size)
            with open(f"{stem}.rows", "ab") as f:
                f.write(rows.tobytes())
            line = "".join(f"{k}\n" for k in keys).encode("ascii")
            with open(f"{stem}.keys", "ab") as f:
                f.write(line)
            self._written = (start + len(keys), key_bytes + len(line))
        for i, k in enumerate(keys):
            self._index.setdefault(k, (seg, start + i))

    def row(self, ref: Ref) -> np.ndarray:
        seg, r = ref
        if self.directory is None:
            return self._segments[seg][r]
        m = self._maps.get(seg)
        if m is None or r >= len(m):  # the segment grew since it was mapped
            n = os.path.getsize(f"{self._segments[seg]}.rows") // self._row_bytes
            m = self._maps[seg] = np.memmap(f"{self._segments[seg]}.rows", self.dtype, "r",
                                            shape=(n, *self.row_shape))
        return m[r]

    def rows(self, refs: Sequence[Ref]) -> np.ndarray:
        return np.stack([self.row(ref) for ref in refs]) if len(refs) else np.zeros((0, *self.row_shape),
                                                                                    self.dtype)
