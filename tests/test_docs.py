"""The docs site builds offline with warnings as errors, with the generated API, CLI and results pages."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("mkdocs", reason="the docs tools are not installed: pip install -e '.[docs]'")


def test_docs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    site = tmp_path / "site"
    api = (site / "reference" / "api" / "index.html").read_text()
    assert "add_products" in api and "create_app" in api  # generated from the docstrings
    cli = (site / "reference" / "cli" / "index.html").read_text()
    assert all(f"multipill {c}" in cli for c in ("train", "predict", "evaluate", "enrol", "export", "serve"))
    results = (site / "results" / "index.html").read_text()
    assert "Serving" in results and (site / "results" / "serve_load.png").is_file()
    for page in site.rglob("*.html"):  # nothing fetched from elsewhere: the site reads offline
        text = page.read_text()
        assert "fonts.googleapis.com" not in text and "cdn.jsdelivr" not in text, page
    assert not (site / "gen_pages.py").exists()
