"""The JSON API of `multipill serve`: answers, every limit, bad input, the API key, concurrency."""
from __future__ import annotations

import copy
import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from multipill import PillClassifier, register_ocr  # noqa: E402
from multipill.cards import WARNING  # noqa: E402
from multipill.ocr import OCREngine  # noqa: E402
from multipill.server import create_app  # noqa: E402

from conftest import live_server  # noqa: E402

FIELDS = {"label", "confidence", "abstained", "abstain_reason", "top_k", "image_proba", "text_proba", "ocr_text",
          "ocr_status", "ocr_boxes", "image_size", "source", "novelty", "card", "warning", "notes", "model"}


@pytest.fixture(scope="module")
def clf(small_model):
    return PillClassifier.load(small_model, progress=False)


@pytest.fixture(scope="module")
def client(clf):
    return TestClient(create_app(clf, name="lookalikes"))


def photo(packs, brand: str, i: int = 0) -> bytes:
    return (packs / "test" / brand / f"{i:04d}.png").read_bytes()


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def claimed_size_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb as far as a decoder knows."""
    data = bytearray(png_bytes(Image.new("L", (8, 8))))
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def post(client, data: bytes, name: str = "photo.png", **form):
    return client.post("/predict", files={"file": (name, data, "application/octet-stream")}, data=form)


def test_predict_answers_with_every_branch_and_the_card(client, clf, packs):
    r = post(client, photo(packs, "Bioflu"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert FIELDS <= set(body)
    assert body["label"] in clf.classes_ and 0 < body["confidence"] <= 1
    assert len(body["top_k"]) == min(5, len(clf.classes_)) and body["top_k"][0]["label"] == body["label"]
    assert set(body["image_proba"]) == set(clf.classes_)
    assert body["source"] in ("image", "fused")
    assert body["warning"] == WARNING
    assert body["model"]["name"] == "lookalikes" and body["model"]["version"]
    assert body["image_size"] == [256, 256]
    for piece in body["ocr_boxes"]:
        assert len(piece["box"]) == 4 and piece["text"] in body["ocr_text"]
    pred = clf.predict(Image.open(packs / "test" / "Bioflu" / "0000.png"))
    assert (body["label"], pytest.approx(body["confidence"])) == (pred.label, pred.confidence)
    if not body["abstained"]:
        assert body["card"] and body["card"]["brand"]["source"]
    assert post(client, photo(packs, "Bioflu"), top_k="2").json()["top_k"][1]["label"] in clf.classes_
    assert len(post(client, photo(packs, "Bioflu"), top_k="2").json()["top_k"]) == 2


def test_blank_photo_abstains_and_says_why(client):
    body = post(client, png_bytes(Image.new("RGB", (256, 256), "white"))).json()
    assert body["abstained"] and body["abstain_reason"] in ("low confidence", "unknown product")
    assert any(n.startswith("abstained") for n in body["notes"])


def test_health_classes_docs_offline(client, clf):
    assert client.get("/health").json()["status"] == "ok"
    classes = client.get("/classes").json()["classes"]
    assert [c["label"] for c in classes] == clf.classes_ and all(c["card"] for c in classes)
    docs = client.get("/docs").text
    assert "swagger-ui" in docs.lower() and "cdn" not in docs.lower()
    assert "://" not in docs.split("<body>")[0].replace("http://www.w3.org", "")  # no external script or style
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/predict/batch", "/health", "/classes", "/explain"} <= set(paths)
    page = client.get("/").text
    assert 'capture="environment"' in page and 'accept="image/*"' in page and "://" not in page
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


def test_batch_answers_good_files_and_names_bad_ones(client, packs):
    files = [("files", ("a.png", photo(packs, "Neozep"), "image/png")),
             ("files", ("notes.jpg", b"not an image at all", "image/jpeg")),
             ("files", ("b.png", photo(packs, "Biogesic"), "image/png"))]
    results = client.post("/predict/batch", files=files).json()["results"]
    assert [r["file"] for r in results] == ["a.png", "notes.jpg", "b.png"]
    assert results[1]["status"] == 415 and "notes.jpg" in results[1]["error"]
    single = post(client, photo(packs, "Neozep")).json()
    assert results[0]["label"] == single["label"] and results[0]["confidence"] == pytest.approx(single["confidence"])
    too_many = [("files", (f"{i}.png", photo(packs, "Neozep"), "image/png")) for i in range(17)]
    assert client.post("/predict/batch", files=too_many).status_code == 413


@pytest.mark.parametrize("data,status,words", [
    (b"", 400, "empty"),
    (b"%PDF-1.4 not a photo", 415, "not a readable image"),
    (png_bytes(Image.new("RGB", (64, 64)))[:60], 415, "not a readable image"),  # truncated
    (claimed_size_png(30000, 30000), 413, "decompression bomb"),  # over Pillow's hard limit
    (claimed_size_png(12000, 8000), 413, "decompression bomb"),  # 96 MP: over the served limit
], ids=["empty", "pdf", "truncated", "bomb-900MP", "bomb-96MP"])
def test_bad_uploads_get_clear_errors(client, data, status, words):
    r = post(client, data, name="upload.jpg")
    assert r.status_code == status, r.text
    assert words in r.json()["detail"] and "upload.jpg" in r.json()["detail"]


def test_missing_field_and_bad_top_k_are_400(client, packs):
    r = client.post("/predict", files={"photo": ("a.png", photo(packs, "Bioflu"), "image/png")})
    assert r.status_code == 400 and "file" in r.json()["detail"]
    assert post(client, photo(packs, "Bioflu"), top_k="0").status_code == 400
    assert post(client, photo(packs, "Bioflu"), top_k="many").status_code == 400


def test_upload_cap_by_length_and_by_stream(clf, packs):
    client = TestClient(create_app(clf, max_upload=100_000))
    big = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), np.uint8)))
    assert len(big) > 100_000
    r = post(client, big)
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks():  # no Content-Length: the cap must hold while the body streams in
        body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
                b"Content-Type: image/png\r\n\r\n" + big + b"\r\n--b--\r\n")
        for i in range(0, len(body), 16384):
            yield body[i:i + 16384]
    r = client.post("/predict", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413
    assert post(client, photo(packs, "Bioflu")).status_code == 200  # a photo under the cap still answered


def test_api_key(clf, packs):
    client = TestClient(create_app(clf, api_key="s3cret"))
    assert post(client, photo(packs, "Bioflu")).status_code == 401
    assert client.post("/predict", files={"file": ("a.png", photo(packs, "Bioflu"))},
                       headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/classes").status_code == 401
    ok = client.post("/predict", files={"file": ("a.png", photo(packs, "Bioflu"))}, headers={"X-API-Key": "s3cret"})
    assert ok.status_code == 200
    assert client.get("/health").status_code == 200  # liveness stays open
    assert 'content="s3cret"' in client.get("/").text  # the operator's page carries the key to its script


class Hanging(OCREngine):
    name = "hanging-serve"

    def _read(self, rgb):
        import time
        time.sleep(5)
        return []


def test_ocr_time_limit_answers_from_the_image(clf, packs):
    register_ocr("hanging-serve", Hanging)
    slow = copy.copy(clf)
    slow.ocr, slow.ocr_timeout, slow.ocr_cache, slow.ocr_gate_ = "hanging-serve", 1.0, None, float("inf")
    body = post(TestClient(create_app(slow)), photo(packs, "Decolgen")).json()
    assert body["source"] == "image" and body["ocr_status"] == "failed"
    assert any("timed out" in n and "image alone" in n for n in body["notes"])


def test_a_full_queue_answers_503_and_the_server_goes_on(clf, packs):
    register_ocr("hanging-serve", Hanging)
    slow = copy.copy(clf)
    slow.ocr, slow.ocr_timeout, slow.ocr_cache, slow.ocr_gate_ = "hanging-serve", 1.0, None, float("inf")
    with live_server(create_app(slow, max_queue=1)) as url:
        def ask(_) -> httpx.Response:
            return httpx.post(f"{url}/predict", files={"file": ("p.png", photo(packs, "Bioflu"))}, timeout=60)
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(ask, range(4)))
        busy = [r for r in responses if r.status_code == 503]
        assert busy and busy[0].headers["Retry-After"] and "busy" in busy[0].json()["detail"]
        assert {r.status_code for r in responses} == {200, 503}
        assert ask(0).status_code == 200


def test_bad_requests_do_not_affect_the_next(client, packs):
    before = post(client, photo(packs, "Biogesic", 1)).json()
    for data in (b"", b"GIF89a broken", claimed_size_png(30000, 30000)):
        post(client, data)
    after = post(client, photo(packs, "Biogesic", 1)).json()
    assert (after["label"], after["confidence"]) == (before["label"], before["confidence"])


def test_concurrent_requests_do_not_mix(clf, packs):
    """Eight clients at once on a real server: each gets the answer its own photo gets alone."""
    photos = [photo(packs, brand, i) for brand in ("Bioflu", "Neozep", "Decolgen", "Biogesic") for i in (2, 3)]
    with live_server(create_app(clf)) as url:
        def ask(data: bytes) -> tuple:
            body = httpx.post(f"{url}/predict", files={"file": ("p.png", data)}, timeout=120).json()
            return body["label"], round(body["confidence"], 6), body["ocr_text"]
        alone = [ask(p) for p in photos]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(ask, photos[::-1] * 2))
        assert httpx.get(f"{url}/health").status_code == 200
    assert together == (alone[::-1] * 2)


def test_explain_returns_a_png(client, packs):
    r = client.post("/explain", files={"file": ("a.png", photo(packs, "Neozep"))})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size[0] > 100
    assert client.post("/explain", files={"file": ("a.png", photo(packs, "Neozep"))},
                       data={"target": "Nope"}).status_code == 400


def test_serve_command_end_to_end(small_model, packs, tmp_path):
    """`multipill serve --model ... --api-key ...` as a user runs it: page, key, answer; Ctrl+C-like stop."""
    from multipill.server import ServerProcess
    with ServerProcess(small_model, tmp_path / "server.log", api_key="k3y", timeout=120) as server:
        url = server.url
        assert 'content="k3y"' in httpx.get(url).text
        files = {"file": ("p.png", photo(packs, "Bioflu"))}
        assert httpx.post(f"{url}/predict", files=files, timeout=60).status_code == 401
        r = httpx.post(f"{url}/predict", files=files, headers={"X-API-Key": "k3y"}, timeout=60)
        assert r.status_code == 200 and r.json()["model"]["name"] == "lookalikes"
    assert server.proc.returncode is not None and f"serving {small_model}" in server.output()


def test_serve_without_a_model_uses_the_demo_model(tmp_path, monkeypatch):
    import multipill.demo
    from multipill.server import demo_model
    trained = []
    monkeypatch.setattr(multipill.demo, "run_demo", lambda out: trained.append(out) or
                        (Path(out) / "model").mkdir(parents=True) or (Path(out) / "model" / "multipill.json").touch())
    assert demo_model(tmp_path / "demo") == tmp_path / "demo" / "model" and trained == [tmp_path / "demo"]
    demo_model(tmp_path / "demo")
    assert len(trained) == 1  # present: served as it is, not trained again


def test_cards_in_answers_do_not_name_server_paths():
    from types import SimpleNamespace

    from multipill.server import prediction_json
    card = {"brand": {"value": "X", "source": "leaflet"}, "images": ["/srv/cards/x/iconic.jpg"]}
    pred = SimpleNamespace(label="X", confidence=0.9, abstained=False, abstain_reason=None, top_k=[("X", 0.9)],
                           image_proba={"X": 0.9}, text_proba=None, text="", ocr_status="empty", pieces=[],
                           source="image", novelty=0.0, card=card, warning="w", notes=[])
    body = prediction_json(pred, Image.new("RGB", (4, 4)), {"name": "m"})
    assert body["card"] == {"brand": {"value": "X", "source": "leaflet"}, "pictures": 1}
    assert "/srv" not in str(body)
