"""`digitcmp serve --workers N`: N server processes answering on one listening socket.

One process's rate is bounded by Python's own work per request (parsing, reading the images, the
JSON answer) more than by the model (docs/performance.md, `python benchmarks/serve.py`). Several processes
share the load the way model servers do: the socket is bound once, here, and each worker process
(started fresh, not forked, so that no runtime state is shared) loads its own model and ONNX
Runtime sessions and accepts connections from that socket; the kernel hands each connection to
one of them.

The parent only watches: when a worker ends (Ctrl-C, SIGTERM, a crash), every other worker is asked
to stop (SIGTERM: uvicorn's graceful shutdown), and those still running after STOP_SECONDS are
killed, so that no process outlives the command.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .predict import Predictor

STOP_SECONDS = 5.0  # a worker's graceful window after SIGTERM (uvicorn's own is 3 s), then SIGKILL


@dataclass(frozen=True)
class AppSettings:
    """What each worker builds its app from (create_app's arguments, and the model to load)."""

    model: str | None
    model_name: str
    db: str | None
    token: str | None
    hosts: list[str]
    allow_origins: list[str]
    model_threads: int | None = None  # per process: the cores shared out (more threads than cores only contend)


def build_app(settings: AppSettings, predictor: Predictor | None = None) -> FastAPI:
    """The app of the settings, answering with predictor (loaded from settings.model when None)."""
    from .predict import load_model
    from .server import create_app

    return create_app(
        predictor or load_model(settings.model),
        model_name=settings.model_name,
        db=settings.db,
        token=settings.token,
        hosts=settings.hosts,
        allow_origins=settings.allow_origins,
        model_threads=settings.model_threads,
    )


def _worker(sock: socket.socket, settings: AppSettings) -> None:
    import uvicorn

    from ..common.host import tune_allocator
    from .http_guard import server_config

    tune_allocator()
    try:
        uvicorn.Server(server_config(build_app(settings))).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the terminal: this one has stopped, quietly
        pass


def serve_in_processes(sock: socket.socket, settings: AppSettings, workers: int) -> int:
    """Run `workers` server processes on sock until one ends; returns the first one's exit code
    (0 after a Ctrl-C or SIGTERM that stopped them all)."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=(sock, settings), name=f"digitcmp-serve-{i}") for i in range(workers)]
    for process in processes:
        process.start()
    code = 0
    try:
        ended = wait([p.sentinel for p in processes])
        first = next(p for p in processes if p.sentinel in ended)
        first.join()
        code = first.exitcode or 0
    finally:
        _stop(processes)
    return code


def _stop(processes: list) -> None:
    for process in processes:
        if process.is_alive():
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for process in processes:
        process.join(STOP_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()
