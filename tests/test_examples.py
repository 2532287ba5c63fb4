"""Every example runs, in its quick form, as a user would run it."""
import os
import socket
import subprocess
import sys
from pathlib import Path


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "QUICK": "1"}


def run(*command: str) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_every_example_is_tested():
    tested = {"quickstart.py", "hub_dataset.py", "cli.sh", "serve_curl.sh", "enrol_card.py"}
    assert {p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh")} == tested


def test_quickstart():
    out = run(sys.executable, str(EXAMPLES / "quickstart.py"), "--quick")
    assert "fused" in out and "pharmacist" in out


def test_hub_dataset():
    out = run(sys.executable, str(EXAMPLES / "hub_dataset.py"), "--quick")
    assert "DatasetDict" in out and "'image':" in out


def test_cli():
    out = run("bash", str(EXAMPLES / "cli.sh"))
    assert "image,label,confidence" in out and "exported to" in out


def test_serve_curl(small_model, packs):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    photo = sorted((packs / "test" / "Bioflu").glob("*.png"))[0]
    out = run("bash", str(EXAMPLES / "serve_curl.sh"), str(small_model), str(photo), str(port))
    assert '"status":"ok"' in out and '"label":' in out and "without the key: 401" in out


def test_enrol_card():
    out = run(sys.executable, str(EXAMPLES / "enrol_card.py"), "--quick")
    lines = [line for line in out.splitlines() if "abstained:" in line]
    assert len(lines) == 4
    assert any(line.startswith("Neozep") and "from card" in line for line in lines), out
