"""`multipill serve`: a web page for phone photos and a JSON API over one loaded model (FastAPI + uvicorn).

FastAPI because the API is the product here: typed endpoints, multipart uploads and OpenAPI docs come with it,
the page is a small static file that talks to the same API, and uvicorn runs it; fastapi-offline serves the
docs' JavaScript from the package instead of a CDN, so `/docs` works without internet like the rest.
"""
from __future__ import annotations

import asyncio
import html
import io
import os
import secrets
import socket
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from PIL import Image

from . import __version__
from .images import ImageLoadError, load_image

MAX_UPLOAD = 10 * 2**20  # bytes per photo: a phone photo is 2-8 MB
MAX_BATCH = 16  # photos per /predict/batch request
MAX_QUEUE = 32  # requests waiting for the model before new ones get 503 (each holds up to MAX_UPLOAD bytes)
MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's own bomb limit (about 89 megapixels); refused before decoding
OCR_TIMEOUT = 10.0  # seconds of OCR per photo before the answer falls back to the image branch
API_KEY_HEADER = "X-API-Key"


class PayloadTooLarge(HTTPException):
    """413, raised while the body streams in, so an oversized upload is never held whole in memory."""

    def __init__(self, limit: int):
        super().__init__(413, f"upload larger than the limit of {limit / 2**20:g} MB")


class UploadLimit:
    """ASGI middleware: refuse bodies over `limit(path)` bytes, by Content-Length up front or while streaming."""

    def __init__(self, app: Any, limit: Callable[[str], int]):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit(scope["path"])
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            error = PayloadTooLarge(limit)
            return await JSONResponse({"detail": error.detail}, 413)(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLarge(limit)
            return message
        await self.app(scope, counted, send)


def failed(name: Optional[str], exc: HTTPException) -> dict:
    """A batch entry for a file that could not be answered: its name, what is wrong, and the HTTP status."""
    return {"file": name, "error": exc.detail, "status": exc.status_code}


def decode_upload(data: bytes, name: str) -> Image.Image:
    """The upload as an upright RGB image, or the HTTP error that names what is wrong with it."""
    if not data:
        raise HTTPException(400, f"{name}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, by its size
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
    except Image.DecompressionBombError as exc:
        raise HTTPException(413, f"{name}: refused as a decompression bomb ({exc})") from exc
    except Exception as exc:  # PIL raises many types for files that are not images
        raise HTTPException(415, f"{name}: not a readable image ({type(exc).__name__}: {exc})") from exc
    if width * height > MAX_PIXELS:
        raise HTTPException(413, f"{name}: {width}x{height} pixels is over the limit of {MAX_PIXELS:,} "
                                 "(refused as a decompression bomb)")
    try:
        return load_image(data)
    except ImageLoadError as exc:
        raise HTTPException(415, f"{name}: {exc}") from exc


def prediction_json(pred: Any, image: Image.Image, model: dict) -> dict:
    """One Prediction as the API's JSON: every branch, what OCR read and where, the card, and why it abstained."""
    return {"label": pred.label, "confidence": pred.confidence, "abstained": pred.abstained,
            "abstain_reason": pred.abstain_reason,
            "top_k": [{"label": c, "probability": p} for c, p in pred.top_k],
            "image_proba": pred.image_proba, "text_proba": pred.text_proba,
            "ocr_text": pred.text, "ocr_status": pred.ocr_status,
            "ocr_boxes": [{"text": p.text, "box": p.box, "confidence": p.confidence} for p in pred.pieces],
            "image_size": list(image.size), "source": pred.source, "novelty": pred.novelty,
            "card": _public(pred.card), "warning": pred.warning, "notes": pred.notes, "model": model}


def _public(card: Optional[dict]) -> Optional[dict]:
    """The card without its pictures' file paths, which name folders on the server."""
    if not card or "images" not in card:
        return card
    return {**{k: v for k, v in card.items() if k != "images"}, "pictures": len(card["images"])}


def _page(api_key: Optional[str]) -> str:
    """The page, with the operator's API key (if any) handed to its script."""
    text = resources.files("multipill").joinpath("web/index.html").read_text(encoding="utf-8")
    return text.replace("{{API_KEY}}", html.escape(api_key or "", quote=True))


def create_app(clf: Any, name: str = "model", api_key: Optional[str] = None, max_upload: int = MAX_UPLOAD,
               max_batch: int = MAX_BATCH, max_queue: int = MAX_QUEUE) -> FastAPI:
    """The web app over a fitted PillClassifier; inference is serialised (one model, 2 cores), requests are not."""
    from fastapi_offline import FastAPIOffline

    clf._check_fitted()
    app = FastAPIOffline(title="multipill", version=__version__, redoc_url=None,
                         description="Identify pharmaceutical products from photos: image + OCR text + fusion. "
                                     "Every answer is to be confirmed against the pack by a pharmacist.")
    model = {"name": name, "version": __version__, "backbone": clf.backbone, "classes": len(clf.classes_),
             "ocr": clf.ocr if clf.fusion else None}
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="multipill-model")
    waiting = [0]  # requests queued for or on the model thread
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    def authorised(key: Optional[str] = Security(header)) -> None:
        if api_key and not (key and secrets.compare_digest(key.encode(), api_key.encode())):
            raise HTTPException(401, f"missing or wrong API key: send it in the {API_KEY_HEADER} header",
                                headers={"WWW-Authenticate": "ApiKey"})

    def batch_limit(path: str) -> int:
        return max_upload * max_batch + 2**20 if path.endswith("/batch") else max_upload + 2**16

    app.add_middleware(UploadLimit, limit=batch_limit)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"detail": problems}, 400)

    async def read(upload: UploadFile) -> tuple[str, bytes]:
        data = await upload.read(max_upload + 1)
        if len(data) > max_upload:
            raise PayloadTooLarge(max_upload)
        return upload.filename or "upload", data

    async def on_model(work: Callable[[], Any]) -> Any:
        """Decode and infer on the one model thread: requests queue (up to `max_queue`, then 503) and cannot
        mix, and memory stays that of one thread however many clients wait."""
        if waiting[0] >= max_queue:
            raise HTTPException(503, f"busy: {waiting[0]} requests are waiting; try again shortly",
                                headers={"Retry-After": "2"})
        waiting[0] += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(worker, work)
        finally:
            waiting[0] -= 1

    def answer(images: list[Image.Image], top_k: int) -> list[dict]:
        preds = clf.predict(images, top_k=min(top_k, len(clf.classes_)))
        return [prediction_json(p, im, model) for p, im in zip(preds, images)]

    def check_top_k(top_k: int) -> None:
        if top_k < 1:
            raise HTTPException(400, f"top_k must be at least 1, got {top_k}")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return _page(api_key)

    @app.get("/health", summary="Liveness and the model served (no API key needed)")
    def health() -> dict:
        return {"status": "ok", "model": model}

    @app.get("/classes", dependencies=[Depends(authorised)], summary="The products the model can name")
    def classes() -> dict:
        return {"classes": [{"label": c, "card": c in clf.cards_, "enrolled": c in clf.enrolled_}
                            for c in clf.classes_]}

    @app.post("/predict", dependencies=[Depends(authorised)], summary="Identify the product in one photo")
    async def predict(file: UploadFile = File(..., description="a photo (JPEG, PNG, WebP...)"),
                      top_k: int = Form(5, description="how many ranked answers to return")) -> dict:
        check_top_k(top_k)
        name, data = await read(file)
        return await on_model(lambda: answer([decode_upload(data, name)], top_k)[0])

    @app.post("/predict/batch", dependencies=[Depends(authorised)],
              summary="Identify several photos; a bad file gets an error entry, the others their answers")
    async def predict_batch(files: list[UploadFile] = File(...), top_k: int = Form(5)) -> dict:
        check_top_k(top_k)
        if len(files) > max_batch:
            raise HTTPException(413, f"{len(files)} files: at most {max_batch} per request")
        results: list[dict] = [{} for _ in files]
        readable = []  # (index, (name, bytes)) of the uploads that arrived whole; the others get their error now
        for i, upload in enumerate(files):
            try:
                readable.append((i, await read(upload)))
            except HTTPException as exc:
                results[i] = failed(upload.filename, exc)

        def work() -> list[dict]:
            images, where = [], []
            for i, (name, data) in readable:
                try:
                    images.append(decode_upload(data, name))
                    where.append(i)
                except HTTPException as exc:
                    results[i] = failed(files[i].filename, exc)
            for i, result in zip(where, answer(images, top_k) if images else []):
                results[i] = {"file": files[i].filename, **result}
            return results
        return {"results": await on_model(work)}

    @app.post("/explain", dependencies=[Depends(authorised)], response_class=Response,
              responses={200: {"content": {"image/png": {}}}},
              summary="Grad-CAM overlay with the OCR boxes, as a PNG (slower: a backward pass)")
    async def explain(file: UploadFile = File(...), target: Optional[str] = Form(None)) -> Response:
        if target is not None and target not in clf.classes_:
            raise HTTPException(400, f"unknown class {target!r}")
        name, data = await read(file)
        png = io.BytesIO()
        await on_model(lambda: clf.explain(decode_upload(data, name), target=target).save(png))
        return Response(png.getvalue(), media_type="image/png")

    app.mount("/static", StaticFiles(packages=[("multipill", "web")]), name="static")
    return app


def demo_model(out: str | Path = "multipill_runs/demo") -> Path:
    """The demo's fused model, trained first (about 5 minutes, offline) when it is not there yet."""
    from .classifier import CONFIG_FILE
    from .demo import run_demo
    model = Path(out) / "model"
    if not (model / CONFIG_FILE).is_file():
        print(f"no demo model in {model}: training it first (the offline demo, about 5 minutes on 2 cores)")
        run_demo(out)
    return model


def serve(model: Optional[str | Path] = None, host: str = "127.0.0.1", port: int = 8000,
          api_key: Optional[str] = None, ocr_timeout: float = OCR_TIMEOUT, max_upload: int = MAX_UPLOAD) -> None:
    """Load the model (the demo's when none is given) and serve the page and API until interrupted."""
    import uvicorn

    from .classifier import PillClassifier
    path = Path(model) if model else demo_model()
    clf = PillClassifier.load(path, ocr_timeout=ocr_timeout, progress=False)
    app = create_app(clf, name=path.resolve().name, api_key=api_key, max_upload=max_upload)
    print(f"serving {path} at http://{host}:{port}/ (API docs at /docs); Ctrl+C stops")
    uvicorn.run(app, host=host, port=port, log_level="info")


class ServerProcess:
    """`multipill serve` in a child process on a free loopback port, for scripts and tests:
    `with ServerProcess(model) as server: httpx.get(server.url + "/health")`; output goes to `log` (a file, not
    a pipe, which would stall the server once full); leaving the block stops the server."""

    def __init__(self, model: str | Path, log: str | Path, api_key: Optional[str] = None,
                 env: Optional[dict[str, str]] = None, timeout: float = 300.0):
        self.model, self.log, self.api_key, self.timeout = Path(model), Path(log), api_key, timeout
        self.env = env

    def __enter__(self) -> "ServerProcess":
        import httpx  # a test and benchmark dependency, not the server's
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [sys.executable, "-m", "multipill", "serve", "--model", str(self.model), "--port", str(port)]
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(command + (["--api-key", self.api_key] if self.api_key else []),
                                         env={**os.environ, "HF_HUB_OFFLINE": "1", **(self.env or {})},
                                         stdout=out, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server stopped: {self.output()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.5)
        self.proc.kill()
        raise RuntimeError(f"the server did not answer /health within {self.timeout:.0f} s")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
