"""`digitcmp serve`: the comparison page and its JSON API (FastAPI), answered by the same
Predictor as `digitcmp predict`.

Request bodies are bounded before they are read, images before they are decoded; every refusal
is one line of JSON, {"error": ...}, and the server goes on serving. Model work runs in worker
threads, never on the event loop. Nothing a request says is used as a path: the page's files are
read from the package when the app is built, the report's figures are kept in memory by name.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from dataclasses import dataclass
from importlib import resources
from typing import Annotated

import numpy as np

from ..common.host import usable_cores
from .arrays import pairs_from_nested
from .batching import MicroBatcher
from .decode import MAX_IMAGE_BYTES
from .errors import InputError
from .http_guard import TrackedSend, send_json_error
from .images import read_image_pair
from .origin import SameOrigin, TrustedHosts, served_hosts
from .predict import Predictor
from .prediction import Prediction

try:
    import anyio
    from fastapi import APIRouter, Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from pydantic import BaseModel, Field, create_model
    from starlette.exceptions import HTTPException
except ImportError as err:  # the optional extra is missing
    raise ImportError(f"digitcmp serve needs the serve extra ({err.name} is missing): pip install -e '.[serve]'") from None

MAX_BODY_BYTES = 5 * 2**20  # two phone photos as JPEG fit; bigger bodies get 413 before they are read
UPLOAD_MAX_PIXELS = 16_000_000  # per image; a 4000x4000 photo, decoded to 64 MB at most
MAX_BATCH_PAIRS = 1000  # pairs in one JSON request (about 1.5 MB of JSON)
MAX_JSON_DEPTH = 16  # a batch is 4 deep ({"pairs": [pair [side [row [pixel]]]]}); deeper is refused before parsing
# A batch's lists and numbers, counted in the text before it is parsed: a full batch has 31 lists
# and 392 numbers a pair; a body of many small lists or numbers would cost far more memory parsed
# (a Python object each) than its bytes.
MAX_JSON_LISTS = 31 * MAX_BATCH_PAIRS + 16
MAX_JSON_VALUES = 392 * MAX_BATCH_PAIRS + 16
BATCH_CHUNK_PAIRS = 16  # a batch is answered this many pairs at a time, so that other requests are answered between
UPLOAD_DECODE_SECONDS = 5.0  # an uploaded image's decode is cut off after this long (400)
BODY_IDLE_S = 10.0  # a body that pauses longer than this between parts gets 408
BODY_TOTAL_S = 30.0  # and one that takes longer than this in all (5 MB at 1.4 Mbit/s)
TOKEN_ENV = "DIGITCMP_TOKEN"
TOKEN_COOKIE = "digitcmp_token"
PAGE_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}

log = logging.getLogger("digitcmp.app.server")


# What only the API answers beside a Prediction: the views the model saw and the regions read.
API_ONLY = {
    "views": (list[list[list[int]]] | None, Field(None, description="The two 14x14 inputs the model saw, 0..255.")),
    "regions": (
        list[list[list[float]]] | None,
        Field(
            None,
            description="Per image, the four corners (x, y) of the region that was read, as fractions of the image's "
            "width and height (multipart answers only).",
        ),
    ),
}


def _answer_model() -> type[BaseModel]:
    """One pair's answer as the API sends it: the Prediction's fields and descriptions (but the
    input's label, which a request does not name), then API_ONLY."""
    import dataclasses
    import typing

    from .prediction import Prediction

    types = typing.get_type_hints(Prediction)
    fields = {
        f.name: (
            types[f.name],
            Field(... if f.default is dataclasses.MISSING else f.default, description=f.metadata["description"]),
        )
        for f in dataclasses.fields(Prediction)
        if f.name != "input"
    }
    return create_model("Answer", __doc__="One pair's answer.", **fields, **API_ONLY)


Answer = _answer_model()


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


class _TooSlow(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413, whether its length is declared
    (refused before reading) or not (refused as soon as the running count passes the bound); a body
    that pauses more than BODY_IDLE_S or takes more than BODY_TOTAL_S in all gets 408, so slow
    clients cannot hold the server."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES, idle_s: float = BODY_IDLE_S, total_s: float = BODY_TOTAL_S):
        self.app, self.limit, self.idle_s, self.total_s = app, limit, idle_s, total_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = f"request body too large; at most {self.limit // 2**20} MB is accepted"
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await send_json_error(send, 413, too_large)
        received, deadline = 0, time.monotonic() + self.total_s

        async def counted_receive():
            nonlocal received
            wait = min(self.idle_s, deadline - time.monotonic())
            with anyio.move_on_after(max(wait, 0)) as waited:
                message = await receive()
            if waited.cancelled_caught:
                raise _TooSlow
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        tracked = TrackedSend(send)
        try:
            await self.app(scope, counted_receive, tracked)
        except _TooLarge:
            if not tracked.started:
                await send_json_error(send, 413, too_large)
        except _TooSlow:
            if not tracked.started:
                message = f"request body too slow: a pause over {self.idle_s:g} s or over {self.total_s:g} s in all"
                await send_json_error(send, 408, message, close=True)


class HeadAsGet:
    """ASGI middleware: HEAD is answered wherever GET is, as GET with the body left out (headers,
    Content-Length included, as GET's)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def headers_only(message):
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def parse_json_body(body: bytes):
    """A JSON body, its nesting bounded before it is parsed (json would recurse as deep as the text
    goes); InputError for anything that is not JSON within the bounds."""
    # Lists and values counted first (bytes.count: no copy of the body), then the depth over the
    # brackets alone, so that refusing a body costs a few passes over its bytes and no memory.
    lists, values = body.count(b"[") + body.count(b"{"), body.count(b",") + 1
    if lists > MAX_JSON_LISTS or values > MAX_JSON_VALUES:
        raise InputError(
            f"JSON of {lists} lists and {values} values; a batch of at most {MAX_BATCH_PAIRS} pairs has at most "
            f"{MAX_JSON_LISTS} and {MAX_JSON_VALUES}"
        )
    # Depth counted over every bracket, those inside strings too: over-counting can only refuse
    # bodies whose strings hold many unmatched brackets, which no request of this API has.
    raw = np.frombuffer(body, np.uint8)
    brackets = raw[np.isin(raw, (91, 93, 123, 125))]
    step = np.where((brackets == 91) | (brackets == 123), 1, -1)  # [ { open, ] } close
    if step.size and int(np.cumsum(step).max()) > MAX_JSON_DEPTH:
        raise InputError(f'JSON nested deeper than {MAX_JSON_DEPTH} levels; send {{"pairs": [[[14x14], [14x14]], ...]}}')
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise InputError(f"body is not valid JSON: {err}") from None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)  # one line


def _answer_record(record: Prediction, views: np.ndarray | None = None, regions=None) -> dict:
    out = {name: getattr(record, name) for name in Answer.model_fields if name not in API_ONLY}
    if views is not None:  # the two 14x14 inputs the model saw, as 0..255 integers
        out["views"] = np.clip(np.rint(views), 0, 255).astype(np.int64).tolist()
    if regions is not None:
        out["regions"] = regions
    return out


def _health(predictor: Predictor, model_name: str, report: bool) -> dict:
    from ..common.version import __version__

    return {
        "model": model_name,
        "arch": predictor.config.get("arch"),
        "test_time_views": predictor.views,
        "metrics": predictor.recorded_errors,
        "version": __version__,
        "report": report,
    }


NOT_FOUND_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Not found - digitcmp</title><link rel="icon" href="/favicon.ico" type="image/png"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem">
<h1>Nothing here</h1><p>This address is not a page of digitcmp.</p>
<p><a href="/">Compare two digits</a> &middot; <a href="/openapi.json">API description</a></p>
</body></html>"""


def _wants_html(request: Request) -> bool:
    """A browser's navigation (it asks for HTML), not an API client: the API always answers JSON."""
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def _favicon() -> bytes:
    """The page's icon, drawn once: a dark tile with a light "<=" (32x32 PNG; browsers take PNG at /favicon.ico)."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, 31, 31), radius=6, fill=(10, 76, 194, 255))
    draw.line([(22, 6), (9, 13), (22, 20)], fill="white", width=3, joint="curve")
    draw.line([(9, 25), (22, 25)], fill="white", width=3)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _page_files() -> dict[str, bytes]:
    folder = resources.files("digitcmp.app") / "web"
    return {name: (folder / name).read_bytes() for name in PAGE_FILES}


PIXEL = {"type": "number", "minimum": 0, "maximum": 255}
IMAGE_PART = (
    f"an image file (PNG, JPEG, WebP, ... up to {UPLOAD_MAX_PIXELS // 1_000_000} megapixels) of one digit; "
    "bytes that are not an image get 400"
)


def _array_of(item: dict, n: int) -> dict:
    return {"type": "array", "items": item, "minItems": n, "maxItems": n}


OPENAPI_COMPARE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["a", "b"],
                    "properties": {
                        "a": {"type": "string", "format": "binary", "minLength": 1, "description": IMAGE_PART},
                        "b": {"type": "string", "format": "binary", "minLength": 1, "description": IMAGE_PART},
                    },
                    "additionalProperties": False,
                },
                "encoding": {"a": {"contentType": "image/*"}, "b": {"contentType": "image/*"}},
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
                            "minItems": 1,
                            "maxItems": MAX_BATCH_PAIRS,
                            "items": _array_of(_array_of(_array_of(PIXEL, 14), 14), 2),
                        }
                    },
                }
            },
        },
    }
}


@dataclass
class Served:
    """What every route is answered from, built once per app and given to the routes as a
    dependency (`Depends(served)`): the predictor and its micro-batcher, the limit on model work
    at once, the token, the page's files, the report."""

    predictor: Predictor
    health: dict
    token: str | None
    limiter: anyio.CapacityLimiter
    batcher: MicroBatcher
    page: dict[str, bytes]
    favicon: bytes
    report: object | None = None  # report_page.ReportPage


def served(request: Request) -> Served:
    return request.app.state.served


ServedState = Annotated[Served, Depends(served)]  # a route's parameter: the app's Served


def _refusal(request: Request, token: str | None, query_token: bool = False) -> None:
    """401 unless the request carries the token (when the server has one)."""
    if token is None:
        return
    given = request.headers.get("authorization", "")
    given = given[7:].strip() if given[:7].lower() == "bearer " else ""
    if not given and query_token:  # a link (?token=), then the cookie that answer set, for its figures
        given = request.query_params.get("token", "") or request.cookies.get(TOKEN_COOKIE, "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            401, "this server needs its token: send the header Authorization: Bearer TOKEN", {"www-authenticate": "Bearer"}
        )


def api_token(request: Request, state: ServedState) -> None:
    _refusal(request, state.token)


def report_token(request: Request, state: ServedState) -> None:
    _refusal(request, state.token, query_token=True)


# ----------------------------------------------------------------------------- the page

page_routes = APIRouter(include_in_schema=False)


@page_routes.get("/")
async def index(state: ServedState):
    return HTMLResponse(state.page["index.html"])


@page_routes.get("/favicon.ico")
async def icon(state: ServedState):
    return Response(state.favicon, media_type="image/png", headers={"cache-control": "max-age=86400"})


@page_routes.get("/static/{name}")
async def static(name: str, state: ServedState):
    if name not in PAGE_FILES or name == "index.html":
        return _error(404, f"no such file: {name[:80]}")
    return Response(state.page[name], media_type=PAGE_FILES[name])


# ----------------------------------------------------------------------------- the API

api_routes = APIRouter(prefix="/api")


@api_routes.get("/health", response_model=Health, summary="The model served and its recorded errors")
async def api_health(state: ServedState):
    return state.health


async def _compare_images(state: Served, images: list[tuple[str, bytes]]) -> dict:
    x, readings = await anyio.to_thread.run_sync(
        lambda: read_image_pair(images, max_pixels=UPLOAD_MAX_PIXELS, seconds=UPLOAD_DECODE_SECONDS),
        limiter=state.limiter,
    )
    (record,) = await state.batcher.compare(x, ["a <= b"], [readings])
    return _answer_record(record, x[0], [r.region for r in readings])


async def _compare_batch(state: Served, pairs) -> dict:
    x = await anyio.to_thread.run_sync(lambda: pairs_from_nested(pairs, "pairs", max_pairs=MAX_BATCH_PAIRS))
    records = []
    # A chunk at a time: requests that arrive meanwhile queue between the chunks, not behind the batch.
    for start in range(0, x.shape[0], BATCH_CHUNK_PAIRS):
        chunk = x[start : start + BATCH_CHUNK_PAIRS]
        records += await state.batcher.compare(chunk, [f"pair {start + i}" for i in range(chunk.shape[0])])
    return {"answers": [_answer_record(r) for r in records]}


@api_routes.post(
    "/compare",
    response_model=Answer | BatchAnswer,
    responses={
        400: {"model": Error},
        401: {"model": Error},
        408: {"model": Error},
        413: {"model": Error},
        415: {"model": Error},
    },
    openapi_extra=OPENAPI_COMPARE_BODY,
    summary="Compare two digit images (multipart a, b) or a batch of 14x14 pairs (JSON)",
    dependencies=[Depends(api_token)],
)
async def api_compare(request: Request, state: ServedState):
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind == "multipart/form-data":
            result = await _compare_images(state, await _read_images(request))
        elif kind == "application/json":
            body = await anyio.to_thread.run_sync(parse_json_body, await request.body())
            if not isinstance(body, dict) or "pairs" not in body:
                return _error(400, 'expected a JSON object {"pairs": [[[14x14], [14x14]], ...]}')
            result = await _compare_batch(state, body["pairs"])
        else:
            return _error(415, "send multipart/form-data with image files a and b, or application/json with pairs")
    except InputError as err:
        return _error(400, err)
    return JSONResponse(result)


# ----------------------------------------------------------------------------- the report (with --db)

report_routes = APIRouter(prefix="/report", include_in_schema=False, dependencies=[Depends(report_token)])


@report_routes.get("/")
async def report_index(state: ServedState):
    html, _ = await anyio.to_thread.run_sync(state.report.render, limiter=state.limiter)
    response = HTMLResponse(html)
    if state.token is not None:  # the figures the page links to are fetched with this cookie
        response.set_cookie(TOKEN_COOKIE, state.token, path="/report/", httponly=True, samesite="strict")
    return response


@report_routes.get("/figures/{name}")
async def report_figure(name: str, state: ServedState):
    _, figures = await anyio.to_thread.run_sync(state.report.render, limiter=state.limiter)
    if name not in figures:
        return _error(404, f"no such figure: {name[:80]}")
    return Response(figures[name], media_type="image/png")


# ----------------------------------------------------------------------------- the app


async def _http_error(request: Request, err: HTTPException):
    if err.status_code == 404 and _wants_html(request):  # a person who typed or followed a bad address
        return HTMLResponse(NOT_FOUND_PAGE, status_code=404)
    response = _error(err.status_code, err.detail)
    response.headers.update(err.headers or {})  # 405's Allow, 401's WWW-Authenticate
    if "GET" in response.headers.get("allow", "").split(", "):
        response.headers["allow"] += ", HEAD"  # answered by HeadAsGet
    return response


async def _validation_error(request: Request, err: RequestValidationError):
    return _error(400, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()))


async def _internal_error(request: Request, err: Exception):
    log.exception("request failed")
    return _error(500, f"internal error: {type(err).__name__}")


def create_app(
    predictor: Predictor,
    model_name: str = "model",
    db: str | os.PathLike | None = None,
    token: str | None = None,
    hosts: list[str] | None = None,
    allow_origins: list[str] | None = None,
    model_threads: int | None = None,
) -> FastAPI:
    """The app: the page at /, the API under /api, and the report of the store `db` at /report/.
    With a token, /api/compare and the report answer only requests that carry it (the header
    `Authorization: Bearer TOKEN`; the report's pages, opened by links, also `?token=TOKEN`); the
    page and /api/health stay open (the page reads the token from its address, `/#token=TOKEN`).
    Only requests for `hosts` (default: the loopback names, origin.served_hosts) are answered, and
    a browser's posts only from the server's own page or `allow_origins` (which also get CORS
    headers). model_threads: how many threads read images and call the model at once (default:
    the usable cores; a server of several processes gives each its share)."""
    health = _health(predictor, model_name, report=db is not None)
    app = FastAPI(
        title="digitcmp",
        summary="Is the first handwritten digit <= the second?",
        version=health["version"],
        docs_url=None,  # FastAPI's interactive pages load their scripts from a CDN; /openapi.json is served
        redoc_url=None,
    )
    # The last added runs first: the Host, then the origin (CORS answers preflights for allowed
    # origins), then the body's bounds.
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES, idle_s=BODY_IDLE_S, total_s=BODY_TOTAL_S)
    app.add_middleware(HeadAsGet)
    app.add_middleware(SameOrigin, allowed_origins=allow_origins)
    if allow_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=[origin.rstrip("/") for origin in allow_origins],
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
        )
    app.add_middleware(TrustedHosts, hosts=hosts if hosts is not None else served_hosts("127.0.0.1"))
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    # Model work is CPU-bound: at most this many requests compute at once, the rest wait their turn
    # without holding the event loop. Pairs from requests that arrive together are answered in one
    # model call (the micro-batcher).
    limiter = anyio.CapacityLimiter(model_threads or usable_cores())
    report = None
    if db is not None:
        from .report_page import ReportPage

        report = ReportPage(db)
    app.state.served = Served(
        predictor, health, token, limiter, MicroBatcher(predictor, limiter), _page_files(), _favicon(), report
    )
    app.include_router(page_routes)
    app.include_router(api_routes)
    if report is not None:
        app.include_router(report_routes)
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
        unexpected = sorted(set(form.keys()) - {"a", "b"})
        if unexpected:
            shown = ", ".join(repr(name[:40]) for name in unexpected)
            raise InputError(f"unexpected form field(s) {shown}; send only the image files a and b")
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
