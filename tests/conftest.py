"""Shared fixtures: a small synthetic lookalike set (Bioflu / Neozep / Decolgen + Biogesic), generated once."""
from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


@pytest.fixture(scope="session")
def small_model(packs, tmp_path_factory) -> Path:
    """A small fused model of the lookalike packs, saved: what the served app and its tests load."""
    from multipill import PillClassifier
    clf = PillClassifier(image_size=128, views=2, epochs=40, patience=8, progress=False).fit(packs)
    return clf.save(tmp_path_factory.mktemp("models") / "lookalikes")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@contextmanager
def live_server(app) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
