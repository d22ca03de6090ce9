"""The routes of `digitcmp serve` (server.py builds the app around them): the page at /, the API
under /api, the report of a store at /report/. Model work runs in worker threads, never on the
event loop; every refusal is one line of JSON, {"error": ...}."""

from __future__ import annotations

from .arrays import pairs_from_nested
from .decode import MAX_IMAGE_BYTES
from .errors import InputError
from .images import read_image_pair
from .limits import BATCH_CHUNK_PAIRS, MAX_BATCH_PAIRS, UPLOAD_DECODE_SECONDS, UPLOAD_MAX_PIXELS, parse_json_body
from .schemas import OPENAPI_COMPARE_BODY, Answer, BatchAnswer, Error, Health, answer_record
from .served import PAGE_FILES, TOKEN_COOKIE, Served, ServedState, api_token, report_token

try:
    import anyio
    from fastapi import APIRouter, Depends, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException
except ImportError as err:  # the optional extra is missing
    raise ImportError(f"digitcmp serve needs the serve extra ({err.name} is missing): pip install -e '.[serve]'") from None


def error_response(status: int, message: str) -> JSONResponse:
    """A refusal as the API words them: {"error": one line}."""
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)  # one line


# ----------------------------------------------------------------------------- the page

page_routes = APIRouter(include_in_schema=False)


@page_routes.get("/")
async def index(state: ServedState) -> Response:
    """The page."""
    return HTMLResponse(state.page["index.html"])


@page_routes.get("/favicon.ico")
async def icon(state: ServedState) -> Response:
    """The page's icon."""
    return Response(state.favicon, media_type="image/png", headers={"cache-control": "max-age=86400"})


@page_routes.get("/static/{name}")
async def static(name: str, state: ServedState) -> Response:
    """One of the page's files (scripts, styles)."""
    if name not in PAGE_FILES or name == "index.html":
        return error_response(404, f"no such file: {name[:80]}")
    return Response(state.page[name], media_type=PAGE_FILES[name])


# ----------------------------------------------------------------------------- the API

api_routes = APIRouter(prefix="/api")


@api_routes.get("/health", response_model=Health, summary="The model served and its recorded errors")
async def api_health(state: ServedState) -> Health:
    return state.health


async def _compare_images(state: Served, images: list[tuple[str, bytes]]) -> dict:
    x, readings = await anyio.to_thread.run_sync(
        lambda: read_image_pair(images, max_pixels=UPLOAD_MAX_PIXELS, seconds=UPLOAD_DECODE_SECONDS),
        limiter=state.limiter,
    )
    (record,) = await state.batcher.compare(x, ["a <= b"], [readings])
    return answer_record(record, x[0], [r.region for r in readings])


async def _compare_batch(state: Served, pairs: object) -> dict:
    x = await anyio.to_thread.run_sync(lambda: pairs_from_nested(pairs, "pairs", max_pairs=MAX_BATCH_PAIRS))
    records = []
    # A chunk at a time: requests that arrive meanwhile queue between the chunks, not behind the batch.
    for start in range(0, x.shape[0], BATCH_CHUNK_PAIRS):
        chunk = x[start : start + BATCH_CHUNK_PAIRS]
        records += await state.batcher.compare(chunk, [f"pair {start + i}" for i in range(chunk.shape[0])])
    return {"answers": [answer_record(r) for r in records]}


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
async def api_compare(request: Request, state: ServedState) -> Response:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind == "multipart/form-data":
            result = await _compare_images(state, await _read_images(request))
        elif kind == "application/json":
            body = await anyio.to_thread.run_sync(parse_json_body, await request.body())
            if not isinstance(body, dict) or "pairs" not in body:
                return error_response(400, 'expected a JSON object {"pairs": [[[14x14], [14x14]], ...]}')
            result = await _compare_batch(state, body["pairs"])
        else:
            return error_response(415, "send multipart/form-data with image files a and b, or application/json with pairs")
    except InputError as err:
        return error_response(400, err)
    return JSONResponse(result)


# ----------------------------------------------------------------------------- the report (with --db)

report_routes = APIRouter(prefix="/report", include_in_schema=False, dependencies=[Depends(report_token)])


@report_routes.get("/")
async def report_index(state: ServedState) -> Response:
    """The report of the store served with --db, rendered from it now."""
    html, _ = await anyio.to_thread.run_sync(state.report.render, limiter=state.limiter)
    response = HTMLResponse(html)
    if state.token is not None:  # the figures the page links to are fetched with this cookie
        response.set_cookie(TOKEN_COOKIE, state.token, path="/report/", httponly=True, samesite="strict")
    return response


@report_routes.get("/figures/{name}")
async def report_figure(name: str, state: ServedState) -> Response:
    """One figure of the report."""
    _, figures = await anyio.to_thread.run_sync(state.report.render, limiter=state.limiter)
    if name not in figures:
        return error_response(404, f"no such figure: {name[:80]}")
    return Response(figures[name], media_type="image/png")


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
