"""`digitcmp serve`: the app factory (create_app) of the comparison page and its JSON API
(FastAPI), answered by the same Predictor as `digitcmp predict`. Its parts, each a module of its
own job: routes (the page, the API, the report), limits (what a request may ask, the middleware
that bounds bodies), schemas (the API's records, an answer derived from prediction.Prediction),
served (the state every route reads, the token, the page's files).

Request bodies are bounded before they are read, images before they are decoded; every refusal
is one line of JSON, {"error": ...}, and the server goes on serving. Model work runs in worker
threads, never on the event loop. Nothing a request says is used as a path: the page's files are
read from the package when the app is built, the report's figures are kept in memory by name.
"""

from __future__ import annotations

import logging
import os

from ..common.host import usable_cores
from .batching import MicroBatcher
from .limits import BODY_IDLE_S, BODY_TOTAL_S, MAX_BODY_BYTES, BodyLimit, HeadAsGet
from .origin import SameOrigin, TrustedHosts, served_hosts
from .predict import Predictor
from .routes import api_routes, error_response, page_routes, report_routes
from .schemas import health_record
from .served import Served, favicon, page_files

try:
    import anyio
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse
    from starlette.exceptions import HTTPException
except ImportError as err:  # the optional extra is missing
    raise ImportError(f"digitcmp serve needs the serve extra ({err.name} is missing): pip install -e '.[serve]'") from None

log = logging.getLogger("digitcmp.app.server")


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


async def _http_error(request: Request, err: HTTPException):
    if err.status_code == 404 and _wants_html(request):  # a person who typed or followed a bad address
        return HTMLResponse(NOT_FOUND_PAGE, status_code=404)
    response = error_response(err.status_code, err.detail)
    response.headers.update(err.headers or {})  # 405's Allow, 401's WWW-Authenticate
    if "GET" in response.headers.get("allow", "").split(", "):
        response.headers["allow"] += ", HEAD"  # answered by HeadAsGet
    return response


async def _validation_error(request: Request, err: RequestValidationError):
    return error_response(400, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()))


async def _internal_error(request: Request, err: Exception):
    log.exception("request failed")
    return error_response(500, f"internal error: {type(err).__name__}")


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
    health = health_record(predictor, model_name, report=db is not None)
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
        predictor, health, token, limiter, MicroBatcher(predictor, limiter), page_files(), favicon(), report
    )
    app.include_router(page_routes)
    app.include_router(api_routes)
    if report is not None:
        app.include_router(report_routes)
    return app
