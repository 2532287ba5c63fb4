"""Shared fixtures: a small synthetic lookalike set (Bioflu / Neozep / Decolgen + Biogesic), generated once."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from multipill.products import SEED_PRODUCTS
from multipill.synthetic import generate_packs

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LOOKALIKES = ("Bioflu", "Neozep", "Decolgen", "Biogesic")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep the OCR cache inside the test run, never in the user's home."""
    os.environ["MULTIPILL_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def packs(tmp_path_factory) -> Path:
    products = tuple(p for p in SEED_PRODUCTS if p.brand in LOOKALIKES)
    return generate_packs(tmp_path_factory.mktemp("packs"), {"train": 12, "validation": 8, "test": 10},
                          products=products, size=256, seed=1)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
