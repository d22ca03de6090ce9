"""Who may talk to the local server: requests for its own address, from its own page.

A browser lets any web page send a "simple" request (a form post) to http://127.0.0.1:PORT with
no preflight, and a page whose name a rebinding DNS points at 127.0.0.1 can read the answers.
Two ASGI middlewares close both ways in: the Host header must name the address served
(Starlette's TrustedHostMiddleware decides), and a request that changes or computes something
(any method but GET, HEAD and OPTIONS) from a browser must come from the server's own origin
(its Origin header, or Sec-Fetch-Site where only that is sent), unless `--allow-origin` named that
origin. Clients that are not browsers (curl, scripts) send neither header and are answered.
Every refusal is one line of JSON.
"""

from __future__ import annotations

import ipaddress

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import Message, Receive, Scope, Send

from .http_guard import send_json_error

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "[::1]"]
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_HOST_CHECKED = "digitcmp.host_checked"


def served_hosts(address: str, extra: list[str] | None = None) -> list[str]:
    """The Host names a server listening on `address` answers: its loopback names when it listens
    on loopback, the address itself when it listens on one interface, any name when it listens on
    all of them (0.0.0.0, ::), plus the names given (`--allow-host`)."""
    extra = [name.lower() for name in extra or []]
    ip = ipaddress.ip_address(address)
    if ip.is_unspecified:
        return ["*"]
    if ip.is_loopback:
        shown = [f"[{address}]" if ip.version == 6 else address]
        return list(dict.fromkeys(shown + LOOPBACK_NAMES + extra))
    return list(dict.fromkeys([f"[{address}]" if ip.version == 6 else address] + extra))


class TrustedHosts:
    """Starlette's TrustedHostMiddleware, its plain-text refusal answered as our JSON line."""

    def __init__(self, app, hosts: list[str]):
        async def checked(scope: Scope, receive: Receive, send: Send) -> None:
            scope[_HOST_CHECKED] = True
            await app(scope, receive, send)

        self.guard = TrustedHostMiddleware(checked, allowed_hosts=hosts, www_redirect=False)
        self.hosts = [h for h in hosts if h != "*"]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.guard(scope, receive, send)

        async def guarded_send(message: Message) -> None:
            if scope.get(_HOST_CHECKED):
                return await send(message)
            if message["type"] == "http.response.start":  # the guard's refusal, replaced by ours
                host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")[:80]
                names = ", ".join(self.hosts)
                await send_json_error(send, 400, f"Host {host!r} is not this server's address; use one of: {names}")

        await self.guard(scope, receive, guarded_send)


class SameOrigin:
    """Refuses (403) a browser's non-safe request from a page of another origin."""

    def __init__(self, app, allowed_origins: list[str] | None = None):
        self.app = app
        self.allowed = {origin.rstrip("/").lower() for origin in allowed_origins or []}

    def refusal(self, scope: Scope) -> str | None:
        """Why this request is refused, or None."""
        if scope["method"] in SAFE_METHODS:
            return None
        headers = dict(scope["headers"])
        origin = headers.get(b"origin", b"").decode("latin-1").strip().lower()
        own = f"{scope.get('scheme', 'http')}://{headers.get(b'host', b'').decode('latin-1')}".lower()
        if origin:
            if origin == own or origin in self.allowed:
                return None
            shown = origin[:80]
        else:
            site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
            if site in ("", "same-origin", "none"):  # no browser, or the user's own address bar
                return None
            shown = f"a {site} page"
        return (
            f"cross-origin request from {shown} refused: only this server's own page ({own}) may send it; "
            "start serve with --allow-origin ORIGIN to allow another"
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            why = self.refusal(scope)
            if why is not None:
                return await send_json_error(send, 403, why)
        await self.app(scope, receive, send)
