"""A digitcmp app served by uvicorn on a free loopback port in a thread of the test process,
stopped (and its thread joined) when the `with` block ends. Used by the API and browser tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


@contextlib.contextmanager
def serving(app, timeout: float = 20.0):
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # so that asyncio sets TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    from digitcmp.http_guard import server_config

    server = uvicorn.Server(server_config(app))  # as `digitcmp serve` runs it
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        stop(server, thread)
        sock.close()


def stop(server, thread) -> None:
    server.should_exit = True
    thread.join(timeout=10)
    assert not thread.is_alive(), "the test server did not stop"
