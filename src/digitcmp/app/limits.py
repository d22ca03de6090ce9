"""The server's bounds on what a request may ask (`digitcmp serve`, server.py): a body's size and
pace, a JSON batch's pairs, nesting, lists and values, an upload's pixels and decoding time. Each
is checked before the work it bounds (a body before it is read, JSON before it is parsed, an image
before it is decoded); a refusal is one line of JSON and the server goes on serving."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError
from .http_guard import TrackedSend, send_json_error

if TYPE_CHECKING:
    from starlette.types import Message

try:
    import anyio
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

        async def counted_receive() -> Message:
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

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def parse_json_body(body: bytes) -> object:
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
