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


def _take(lock_path: Path, how: int):
    """The lock file opened and flocked `how` (LOCK_EX or LOCK_SH, with LOCK_NB or not); None when
    it is busy and LOCK_NB was asked. A holder before us may have removed the file after we opened
    it: then our lock is on a file no one else will find, so the file now at the path is taken."""
    while True:
        handle = open(lock_path, "a+")
        try:
            fcntl.flock(handle, how)
        except BlockingIOError:
            handle.close()
            return None
        try:
            if os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()


def _release(handle, lock_path: Path, remove: bool) -> None:
    if remove:
        lock_path.unlink(missing_ok=True)  # while still holding the lock, so no one else holds it now
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


@contextmanager
def file_lock(lock_path: str | os.PathLike, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the lock named lock_path; LockBusy when another process holds it for longer than
    wait_s (0: not at all)."""
    lock_path = Path(lock_path)
    deadline = time.monotonic() + wait_s
    while (handle := _take(lock_path, fcntl.LOCK_EX | fcntl.LOCK_NB)) is None:
        if time.monotonic() >= deadline:
            raise LockBusy(str(lock_path))
        time.sleep(0.05)
    try:
        yield
    finally:
        _release(handle, lock_path, remove=True)


@contextmanager
def shared_use(lock_path: str | os.PathLike) -> Iterator[Callable[[], bool]]:
    """Mark a resource as in use by this process, beside others that use it too (a shared flock on
    lock_path, held until the block ends). Yields alone(): whether no other process uses it now
    (for removing what this process created only when no one else relies on it)."""
    lock_path = Path(lock_path)
    handle = _take(lock_path, fcntl.LOCK_SH)

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
        _release(handle, lock_path, remove=alone())  # the last user removes the lock file
