"""Predict a folder of any size: photos decoded a batch at a time, rows written as they come, resumable."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from tqdm.auto import tqdm

from .data import prefetch
from .images import ImageLoadError, load_image

FIELDS = ["image", "label", "confidence", "abstained", "source", "text", "top_k", "card", "error"]


def printable(value: object) -> str:
    """A file name or message as printable UTF-8: bytes that are not UTF-8 in a file name shown as \\xNN."""
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def prediction_row(path: Path, pred: Any) -> dict:
    return {"image": printable(path), "label": pred.label, "confidence": round(pred.confidence, 4),
            "abstained": pred.abstained, "source": pred.source, "text": pred.text,
            "top_k": "; ".join(f"{c}:{p:.3f}" for c, p in pred.top_k),
            "card": json.dumps(pred.card) if pred.card else "", "error": ""}


def error_row(path: Path, error: Exception) -> dict:
    return {"image": printable(path), "label": "", "confidence": "", "abstained": "", "source": "", "text": "",
            "top_k": "", "card": "", "error": printable(error)}


class RowWriter:
    """CSV or JSON Lines appended row by row and flushed, so a stopped run keeps every finished row; `resume`
    keeps the rows already written (a torn last line is dropped) and says which photos they cover."""

    def __init__(self, path: str | Path, resume: bool = False):
        self.path = Path(path)
        self.lines = self.path.suffix.lower() == ".jsonl"
        if self.path.suffix.lower() not in (".csv", ".jsonl"):
            raise ValueError(f"{self.path}: streamed output is .csv or .jsonl")
        self.done: set[str] = set()
        fresh = not (resume and self.path.is_file())
        if not fresh:
            data = self.path.read_bytes()
            self.path.write_bytes(data[:data.rfind(b"\n") + 1])  # a line cut by a crash is read again
            self.done = {r["image"] for r in self._rows() if r.get("error") is not None}
        self.file = self.path.open("w" if fresh else "a", newline="", encoding="utf-8")
        self.csv = None if self.lines else csv.DictWriter(self.file, fieldnames=FIELDS)
        if fresh and self.csv:
            self.csv.writeheader()

    def _rows(self) -> list[dict]:
        with self.path.open(newline="", encoding="utf-8") as f:
            if self.lines:
                return [json.loads(line) for line in f if line.strip()]
            return list(csv.DictReader(f))

    def write(self, rows: Sequence[dict]) -> None:
        for row in rows:
            if self.csv:
                self.csv.writerow(row)
            else:
                self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _decode(files: Sequence[Path]) -> tuple[list[dict], list[Path], list]:
    """Error rows for the unreadable files, and the readable ones with their decoded images."""
    rows, good, images = [], [], []
    for f in files:
        try:
            images.append(load_image(f))
            good.append(f)
        except ImageLoadError as exc:
            rows.append(error_row(f, exc))
    return rows, good, images


def predict_files(clf: Any, files: Sequence[Path], skip: Optional[set[str]] = None, batch_size: int = 32,
                  top_k: int = 5, progress: bool = True) -> Iterator[tuple[list[dict], list]]:
    """(rows, predictions) a batch at a time: memory holds two batches of decoded photos whatever the folder,
    the next batch decoded in the background while this one is answered."""
    todo = [f for f in files if printable(f) not in (skip or set())]
    bar = tqdm(total=len(todo), desc="predict", disable=not progress, unit="photo")
    batches = [todo[start:start + batch_size] for start in range(0, len(todo), batch_size)]
    for batch, (rows, good, images) in zip(batches, prefetch(_decode, batches)):
        preds = clf.predict(images, top_k=top_k) if images else []
        rows += [prediction_row(f, p) for f, p in zip(good, preds)]
        rows.sort(key=lambda r: r["image"])
        bar.update(len(batch))
        yield rows, preds
    bar.close()
