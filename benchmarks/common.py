"""Shared by the benchmark scripts: data defaults, machine description, bootstrap intervals, output files."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def machine() -> dict:
    """Cores, CPU model and date, recorded with every result."""
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "date": datetime.date.today().isoformat()}


def _resample(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Image indices drawn with replacement, one row per bootstrap sample."""
    return np.random.default_rng(seed).integers(0, n, (n_boot, n))


def bootstrap_ci(correct: Sequence[bool], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of accuracy over images resampled with replacement."""
    c = np.asarray(correct, float)
    if not len(c):
        return (0.0, 0.0)
    means = c[_resample(len(c), n_boot, seed)].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def error_ratio_ci(correct: Sequence[bool], baseline_correct: Sequence[bool], n_boot: int = 2000,
                   seed: int = 0) -> tuple[float, float]:
    """95% interval of error / baseline error, both on the same resampled images (paired), so it says how
    sure a ratio measured on a few hundred images is; samples where the baseline makes no error are skipped."""
    c, b = np.asarray(correct, float), np.asarray(baseline_correct, float)
    if not len(c):
        return (0.0, 0.0)
    idx = _resample(len(c), n_boot, seed)
    err, base = 1 - c[idx].mean(1), 1 - b[idx].mean(1)
    ratios = err[base > 0] / base[base > 0]
    if not len(ratios):
        return (0.0, 0.0)
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a few minutes: subsets, few epochs")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for JSON and PNG")
    return p


def commit() -> str:
    """The code's git commit (with "+changes" when the work tree differs from it), for every result."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD")
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "") if head else "unknown"


STARTED_AT = commit()  # the code a run started from: later commits made while it runs are not its code


def write_json(out: Path, name: str, payload: dict) -> Path:
    """The result with the machine, the commit and the command that produced it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    script = Path(sys.argv[0]).resolve()
    command = " ".join(["python", str(script.relative_to(ROOT) if script.is_relative_to(ROOT) else script),
                        *sys.argv[1:]])
    path.write_text(json.dumps({"machine": machine(), "commit": STARTED_AT, "command": command, **payload}, indent=2))
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def subsample(samples, per_class: int, seed: int):
    """At most per_class images of each class, seeded: for --quick runs."""
    from multipill.data import per_class as pick_per_class
    return samples.subset(pick_per_class(samples.labels, per_class, seed).tolist())


def train_val(data, quick: bool):
    """`train` and the validation split of an ImageFolder; 10 and 5 images per class with --quick."""
    from multipill.data import VAL_SPLITS, load_splits, pick
    splits = load_splits(data)
    train, val = splits["train"], pick(splits, VAL_SPLITS)
    return (subsample(train, 10, 0), subsample(val, 5, 0)) if quick else (train, val)
