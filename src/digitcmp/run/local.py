"""Local worker processes: calls run in a pool of fresh interpreters on this machine, one torch
thread each (the fastest use of a small CPU), and stop with the process that started them."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from .errors import SweepError


def _init_worker(data_dir, parent_pid: int) -> None:
    import signal

    from ..core.perf import configure_process

    # Ctrl-C reaches the whole process group: the parent alone handles it, and stops the workers
    # (a run in flight is lost, as with any interruption; stored runs are safe).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent(parent_pid)
    configure_process(1)
    from ..core.data import load_mnist

    # Read and check MNIST once per worker, before the first run is timed.
    load_mnist("train", data_dir)
    load_mnist("test", data_dir)


def _end_with_parent(parent_pid: int) -> None:
    """Make this worker end when the sweep's parent process ends, however it ends (SIGKILL
    included): the kernel's parent-death signal on Linux, and a watcher thread everywhere."""
    import ctypes
    import signal
    import sys
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent_pid:  # the parent ended before the signal was set up
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def worker_results(fn: Callable, calls: list[tuple], jobs: int, data_dir: str | os.PathLike | None) -> Iterator:
    """fn(*call) for each call in worker processes on this machine (fn importable by name); yields
    each result as it finishes.

    However the caller stops (an exception, Ctrl-C, a termination signal), the workers stop too:
    work in flight is lost, what the calls stored is kept."""
    ctx = mp.get_context("spawn")  # a clean interpreter per worker, whatever the parent did
    # Stopping workers mid-task leaves the pool's queue semaphores to multiprocessing's resource
    # tracker, which removes them and warns on stderr; that warning would break the one-line report
    # of an interruption. The tracker takes its warning filters from this process's -W options.
    quiet = "ignore::UserWarning:multiprocessing.resource_tracker"
    if quiet not in sys.warnoptions:
        sys.warnoptions.append(quiet)
    pool = ProcessPoolExecutor(
        min(jobs, len(calls)), mp_context=ctx, initializer=_init_worker, initargs=(data_dir, os.getpid())
    )
    finished = False
    try:
        pending = {pool.submit(fn, *call) for call in calls}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
        finished = True
    except BrokenProcessPool:
        raise SweepError(
            "a worker process died while training (killed, or out of memory); the runs stored so far are kept: "
            "run the same command to resume"
        ) from None
    finally:
        if not finished:
            # The executor has no public way to stop a task in flight: end its processes.
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
        pool.shutdown(wait=finished, cancel_futures=True)
