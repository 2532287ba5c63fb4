"""Files written so that an interruption leaves the old version or the new one, never a torn one."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable


def write_atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    """`write(tmp_path)` fills a temporary file beside `path`, which then replaces `path` in one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def cache_root() -> Path:
    """Where multipill keeps what it can recompute (OCR readings, trunk activations): $MULTIPILL_CACHE or
    ~/.cache/multipill."""
    return Path(os.environ.get("MULTIPILL_CACHE", Path.home() / ".cache" / "multipill"))


def sha256(path: str | Path) -> str:
    """Hex digest of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
