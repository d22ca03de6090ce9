"""What every route is answered from (`digitcmp serve`, server.py): the app's Served state, given to
routes as a dependency; the token that guards the API and the report; the page's files, read from
the package once when the app is built (nothing a request says is used as a path)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from importlib import resources
from typing import Annotated

from .batching import MicroBatcher
from .predict import Predictor

try:
    import anyio
    from fastapi import Depends, Request
    from starlette.exceptions import HTTPException
except ImportError as err:  # the optional extra is missing
    raise ImportError(f"digitcmp serve needs the serve extra ({err.name} is missing): pip install -e '.[serve]'") from None

TOKEN_ENV = "DIGITCMP_TOKEN"
TOKEN_COOKIE = "digitcmp_token"
PAGE_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}


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
    """The app's served state (the Served of create_app)."""
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
    """Refuses an API request without the server's token (when it has one)."""
    _refusal(request, state.token)


def report_token(request: Request, state: ServedState) -> None:
    """Refuses a report request without the token (header, cookie or ?token=)."""
    _refusal(request, state.token, query_token=True)


def favicon() -> bytes:
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


def page_files() -> dict[str, bytes]:
    """The page's files, read from the package once."""
    folder = resources.files("digitcmp.app") / "web"
    return {name: (folder / name).read_bytes() for name in PAGE_FILES}
