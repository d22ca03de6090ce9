"""`digitcmp serve`: the comparison page and its JSON API (FastAPI), answered by the same
Predictor as `digitcmp predict`.

Request bodies are bounded before they are read, images before they are decoded; every refusal
is one line of JSON, {"error": ...}, and the server goes on serving. Model work runs in worker
threads, never on the event loop. Nothing a request says is used as a path: the page's files are
read from the package when the app is built, the report's figures are kept in memory by name.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import resources

import torch

from .images import MAX_IMAGE_BYTES, read_image_pair
from .inputs import InputError, pairs_from_nested
from .predict import Predictor
from .sweep import usable_cores

try:
    import anyio
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from pydantic import BaseModel
    from starlette.exceptions import HTTPException
except ImportError as err:  # the optional extra is missing
    raise ImportError(f"digitcmp serve needs the serve extra ({err.name} is missing): pip install -e '.[serve]'") from None

MAX_BODY_BYTES = 5 * 2**20  # two phone photos as JPEG fit; bigger bodies get 413 before they are read
MAX_IMAGE_PIXELS = 16_000_000  # per image; a 4000x4000 photo, decoded to 64 MB at most
MAX_BATCH_PAIRS = 1000  # pairs in one JSON request (about 1.5 MB of JSON)
PAGE_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}

log = logging.getLogger("digitcmp.server")


class Answer(BaseModel):
    """One pair's answer."""

    le: bool
    p_le: float
    digits: list[int]
    digit_probs: list[list[float]]
    unsure: bool
    doubt: str | None = None
    views: list[list[list[int]]] | None = None
    regions: list[list[list[float]]] | None = None
    """Per image, the four corners (x, y) of the region that was read, as fractions of the image's
    width and height (multipart answers only)."""


class BatchAnswer(BaseModel):
    answers: list[Answer]


class Health(BaseModel):
    model: str
    arch: str
    test_time_views: int
    metrics: dict[str, float]
    version: str
    report: bool


class Error(BaseModel):
    error: str


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413, whether its length is declared
    (refused before reading) or not (refused as soon as the running count passes the bound)."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def _refuse(self, send) -> None:
        body = json.dumps({"error": f"request body too large; at most {self.limit // 2**20} MB is accepted"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(send)
        received, started = 0, False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)  # one line


def _answer_record(record: dict, views: torch.Tensor | None = None, regions=None) -> dict:
    out = {k: record[k] for k in ("le", "p_le", "digits", "digit_probs", "unsure")}
    out["doubt"] = record.get("doubt")
    if views is not None:  # the two 14x14 inputs the model saw, as 0..255 integers
        out["views"] = views.round().clamp(0, 255).to(torch.int64).tolist()
    if regions is not None:
        out["regions"] = regions
    return out


def _health(predictor: Predictor, model_name: str, report: bool) -> dict:
    from . import __version__

    config = predictor.checkpoint.config
    return {
        "model": model_name,
        "arch": config.arch,
        "test_time_views": config.tta,
        "metrics": predictor.checkpoint.recorded_errors,
        "version": __version__,
        "report": report,
    }


def _page_files() -> dict[str, bytes]:
    folder = resources.files("digitcmp") / "web"
    return {name: (folder / name).read_bytes() for name in PAGE_FILES}


OPENAPI_COMPARE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["a", "b"],
                    "properties": {
                        "a": {"type": "string", "format": "binary", "description": "image of the first digit"},
                        "b": {"type": "string", "format": "binary", "description": "image of the second digit"},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["pairs"],
                    "properties": {
                        "pairs": {
                            "type": "array",
                            "description": f"1 to {MAX_BATCH_PAIRS} pairs [2][14][14] of pixel values 0..255 "
                            "(light digit on a dark background, like MNIST)",
                            "items": {"type": "array"},
                        }
                    },
                }
            },
        },
    }
}


def create_app(predictor: Predictor, model_name: str = "model", db: str | os.PathLike | None = None) -> FastAPI:
    """The app: the page at /, the API under /api, and the report of the store `db` at /report/."""
    health = _health(predictor, model_name, report=db is not None)
    app = FastAPI(
        title="digitcmp",
        summary="Is the first handwritten digit <= the second?",
        version=health["version"],
        docs_url=None,  # FastAPI's interactive pages load their scripts from a CDN; /openapi.json is served
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    page = _page_files()
    # Model work is CPU-bound: at most this many requests compute at once, the rest wait their turn
    # without holding the event loop.
    limiter = anyio.CapacityLimiter(usable_cores())

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return _error(err.status_code, err.detail)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        return _error(400, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception):
        log.exception("request failed")
        return _error(500, f"internal error: {type(err).__name__}")

    @app.get("/", include_in_schema=False)
    async def index():
        return HTMLResponse(page["index.html"])

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in PAGE_FILES or name == "index.html":
            return _error(404, f"no such file: {name[:80]}")
        return Response(page[name], media_type=PAGE_FILES[name])

    @app.get("/api/health", response_model=Health, summary="The model served and its recorded errors")
    async def api_health():
        return health

    def compare_images(images: list[tuple[str, bytes]]) -> dict:
        x, readings = read_image_pair(images, max_pixels=MAX_IMAGE_PIXELS)
        (record,) = predictor.compare(x, ["a <= b"], [readings])
        return _answer_record(record, x[0], [r.region for r in readings])

    def compare_batch(pairs) -> dict:
        x = pairs_from_nested(pairs, "pairs", max_pairs=MAX_BATCH_PAIRS)
        records = predictor.compare(x, [f"pair {i}" for i in range(x.shape[0])])
        return {"answers": [_answer_record(r) for r in records]}

    @app.post(
        "/api/compare",
        response_model=Answer | BatchAnswer,
        responses={400: {"model": Error}, 413: {"model": Error}, 415: {"model": Error}},
        openapi_extra=OPENAPI_COMPARE_BODY,
        summary="Compare two digit images (multipart a, b) or a batch of 14x14 pairs (JSON)",
    )
    async def api_compare(request: Request):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if kind == "multipart/form-data":
                images = await _read_images(request)
                result = await anyio.to_thread.run_sync(compare_images, images, limiter=limiter)
            elif kind == "application/json":
                try:
                    body = json.loads(await request.body())
                except (ValueError, UnicodeDecodeError) as err:
                    return _error(400, f"body is not valid JSON: {err}")
                if not isinstance(body, dict) or "pairs" not in body:
                    return _error(400, 'expected a JSON object {"pairs": [[[14x14], [14x14]], ...]}')
                result = await anyio.to_thread.run_sync(compare_batch, body["pairs"], limiter=limiter)
            else:
                return _error(415, "send multipart/form-data with image files a and b, or application/json with pairs")
        except InputError as err:
            return _error(400, err)
        return JSONResponse(result)

    if db is not None:
        from .report_page import ReportPage

        report = ReportPage(db)

        @app.get("/report/", include_in_schema=False)
        async def report_index():
            html, _ = await anyio.to_thread.run_sync(report.render, limiter=limiter)
            return HTMLResponse(html)

        @app.get("/report/figures/{name}", include_in_schema=False)
        async def report_figure(name: str):
            _, figures = await anyio.to_thread.run_sync(report.render, limiter=limiter)
            if name not in figures:
                return _error(404, f"no such figure: {name[:80]}")
            return Response(figures[name], media_type="image/png")

    return app


async def _read_images(request: Request) -> list[tuple[str, bytes]]:
    """The multipart fields a and b, each an image file, as bytes in memory."""
    from starlette.datastructures import UploadFile

    try:
        form = await request.form(max_files=2, max_fields=4)
    except (HTTPException, ValueError, KeyError) as err:  # malformed multipart, too many parts
        raise InputError(f"cannot read the form: {getattr(err, 'detail', err)}") from None
    images = []
    try:
        for name in ("a", "b"):
            part = form.get(name)
            if not isinstance(part, UploadFile):
                raise InputError(f"field {name} must be an image file (multipart fields a and b, one image each)")
            data = await part.read(MAX_IMAGE_BYTES + 1)
            if not data:
                raise InputError(f"image {name} is empty")
            images.append((name, data))
    finally:
        await form.close()
    return images
