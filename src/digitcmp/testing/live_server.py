"""A digitcmp app served by uvicorn on a free loopback port in a thread of this process,
stopped (and its thread joined) when the `with` block ends; or the real `digitcmp serve` in a process
of its own. Used by the API and browser tests and benchmarks/serve.py."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from digitcmp.testing.processes import scaled_wait

if TYPE_CHECKING:
    import subprocess

    import uvicorn
    from starlette.types import ASGIApp


@contextlib.contextmanager
def serving(app: ASGIApp, timeout: float = 20.0) -> Iterator[tuple[str, uvicorn.Server]]:
    """The app served on a free loopback port in a thread; yields (its URL, the server)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # so that asyncio sets TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    from digitcmp.app.http_guard import server_config

    server = uvicorn.Server(server_config(app))  # as `digitcmp serve` runs it
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + scaled_wait(timeout)
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        stop(server, thread)
        sock.close()


def stop(server: uvicorn.Server, thread: threading.Thread) -> None:
    """Stop a server started by serving and join its thread."""
    server.should_exit = True
    thread.join(timeout=scaled_wait(10))
    assert not thread.is_alive(), "the test server did not stop"


@contextlib.contextmanager
def serve_command(*args: str, env: dict | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """The real `python -m digitcmp serve --port 0 ARGS` in a process of its own (server_process)."""
    import sys

    with server_process([sys.executable, "-m", "digitcmp", "serve", "--port", "0", *args], env) as started:
        yield started


@contextlib.contextmanager
def server_process(command: list[str], env: dict | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """A server command in a process of its own; yields (process, the first line it printed: where
    it serves). Afterwards it is stopped with SIGINT (killed if it does not end in 20 s), and
    process.stderr_text holds what it wrote to stderr."""
    import signal
    import subprocess

    from digitcmp.testing.processes import sigint_as_usual

    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_usual, env=env)  # fmt: skip
    try:
        yield proc, proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=scaled_wait(20))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr_text = proc.stderr.read()
