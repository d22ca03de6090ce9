"""What uvicorn's HTTP/1.1 protocol leaves open: a client that never finishes its headers holds its
connection forever, and a malformed request is answered in plain text. This protocol gives every
request's headers a deadline (answered 408, then closed) and answers malformed HTTP as JSON, like
every other refusal of the server. Slow bodies are the app's to time (limits.BodyLimit)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Send

HEADER_TIMEOUT_S = 10.0  # from a connection's first byte (or its last answer) to the end of the next headers
SHUTDOWN_S = 3  # after Ctrl-C, requests still running get this long before their connections are closed


def _json_answer(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer {"error": message} that closes the connection, as bytes: written
    directly, since h11 answers only requests it has parsed, and these were not."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedH11Protocol(H11Protocol):
    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:
        """A new connection: its first request's headers are timed from now."""
        super().connection_made(transport)
        self._header_deadline = None
        self._arm()  # a client that connects and sends nothing is timed too

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def data_received(self, data: bytes) -> None:
        """Bytes in: the header deadline runs while a request's headers are incomplete."""
        if self._waiting_for_headers():
            self._arm()
        super().data_received(data)
        if not self._waiting_for_headers():
            self._disarm()  # this request's headers are in; the app times its body

    def on_response_complete(self) -> None:
        """A response sent: no deadline until the next request's first byte."""
        super().on_response_complete()  # arms uvicorn's keep-alive timer for an idle connection
        self._disarm()  # the next request's deadline starts with its first byte

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing() or not self._waiting_for_headers():
            return
        message = f"request headers not received within {self.header_timeout_s:g} s"
        self.transport.write(_json_answer(408, "Request Timeout", message))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed: its timer is cancelled."""
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A malformed request, refused as our one-line JSON error."""
        self._disarm()
        self.transport.write(_json_answer(400, "Bad Request", "malformed HTTP request; send HTTP/1.1 with valid headers"))
        self.transport.close()


async def send_json_error(send: Send, status: int, message: str, close: bool = False) -> None:
    """Answer an ASGI request with status and {"error": message}, one line (closing the connection
    when asked): every refusal the middlewares make."""
    body = json.dumps({"error": " ".join(message.split())}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TrackedSend:
    """An ASGI send that records whether the response has started (so a middleware knows whether
    it may still answer instead)."""

    def __init__(self, send):
        self.send, self.started = send, False

    async def __call__(self, message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self.send(message)


class AnswerWhenStopped:
    """ASGI middleware: a request still running when the server stops (Ctrl-C, SHUTDOWN_S after it)
    is answered 503 in one JSON line, not left to end in a traceback on the terminal."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        tracked = TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:  # uvicorn cancels what is still running once SHUTDOWN_S have passed
            if scope["type"] == "http" and not tracked.started:
                try:
                    await send_json_error(send, 503, "the server was stopped while answering; send the request again")
                except Exception:  # the connection is gone already
                    pass


class _QuietShutdown(logging.Filter):
    """uvicorn's line for the requests it cancels at shutdown: they are answered 503 (above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "timeout graceful shutdown exceeded" not in record.getMessage()


def server_config(app: ASGIApp) -> uvicorn.Config:
    """How `digitcmp serve` runs an app (and the tests' live servers run theirs)."""
    config = uvicorn.Config(
        AnswerWhenStopped(app),
        log_level="warning",
        access_log=False,
        http=GuardedH11Protocol,
        timeout_graceful_shutdown=SHUTDOWN_S,
    )
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietShutdown) for f in logger.filters):
        logger.addFilter(_QuietShutdown())
    return config
