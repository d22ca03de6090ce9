"""A lock between processes on one machine: a file beside what it guards, held with flock and
removed by its holder when done (so that no lock files are left lying about)."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class LockBusy(Exception):
    """The lock is held by another process (and waiting was not asked for, or took too long)."""


@contextmanager
def file_lock(lock_path: str | os.PathLike, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the lock named lock_path; LockBusy when another process holds it for longer than
    wait_s (0: not at all)."""
    lock_path = Path(lock_path)
    deadline = time.monotonic() + wait_s
    while True:
        handle = open(lock_path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            if time.monotonic() >= deadline:
                raise LockBusy(str(lock_path)) from None
            time.sleep(0.05)
            continue
        # The holder before us may have removed the file after we opened it: then our lock is on a
        # file no one else will find, so take the lock again on the file now at the path.
        try:
            if os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # while still holding the lock, so no one else holds it now
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@contextmanager
def shared_use(lock_path: str | os.PathLike) -> Iterator[Callable[[], bool]]:
    """Mark a resource as in use by this process, beside others that use it too (a shared flock on
    lock_path, held until the block ends). Yields alone(): whether no other process uses it now
    (for removing what this process created only when no one else relies on it)."""
    lock_path = Path(lock_path)
    while True:
        handle = open(lock_path, "a+")
        fcntl.flock(handle, fcntl.LOCK_SH)
        try:  # the file a last user removed after we opened it: lock the one now at the path
            if os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()

    def alone() -> bool:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # (a failed upgrade drops the shared lock: taken again)
            fcntl.flock(handle, fcntl.LOCK_SH)
            return False
        return True

    try:
        yield alone
    finally:
        if alone():  # the last user removes the lock file
            lock_path.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
