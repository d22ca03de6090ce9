"""Ctrl-C and SIGTERM that are never lost.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT arrives. When that
is inside a weakref callback or a `__del__` (the garbage collector runs them at any allocation), the
exception is reported as "ignored" and the work simply goes on: a person's Ctrl-C is lost and the
command ends with exit 0. And a library may turn the exception of a signal handler into a plain
KeyboardInterrupt (Ray's waits do), so a SIGTERM would read as Ctrl-C. The handlers installed here
also *record* which signal came; the training loop checks the record at every step and the CLI at
its end, so a stop swallowed or renamed on the way still stops the work and still ends as
"interrupted" (130) or "terminated" (143).
"""

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_received: int | None = None  # the signal that asked this command to stop, if any


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: stored results kept, workers stopped, one line. (A kind of
    KeyboardInterrupt, so that libraries that stop cleanly on Ctrl-C stop cleanly on it too.)"""


def _on_signal(signum, frame) -> None:
    global _received
    _received = signum
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt


def _quiet_about_interrupts(unraisable) -> None:
    # The stop was recorded; the "Exception ignored in ..." report of it would only be noise.
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _received is not None:
        return
    sys.__unraisablehook__(unraisable)


def install() -> tuple[dict, Callable] | None:
    """Record SIGTERM, and Ctrl-C where it has Python's default handler, as well as raising them
    (main thread only); returns what restore() needs."""
    global _received
    _received = None
    if threading.current_thread() is not threading.main_thread():
        return None
    saved = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_signal)}
    # Ctrl-C ignored or handled by someone else (a worker, an embedding program) is left be.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        saved[signal.SIGINT] = signal.signal(signal.SIGINT, _on_signal)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_about_interrupts
    return saved, previous_hook


def restore(saved: tuple[dict, Callable] | None) -> None:
    """Undo install(): the handlers and the hook it replaced."""
    if saved is not None:
        handlers, hook = saved
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        sys.unraisablehook = hook


@contextmanager
def handlers_kept() -> Iterator[None]:
    """Whatever the block installs for SIGINT and SIGTERM (a library starting up) is undone after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)


def requested() -> bool:
    """Whether Ctrl-C or SIGTERM arrived since install(), caught or not."""
    return _received is not None


def terminated() -> bool:
    """Whether the stop that arrived was SIGTERM."""
    return _received == signal.SIGTERM


def check() -> None:
    """Raise the stop that arrived (Terminated or KeyboardInterrupt), even if the first one was swallowed."""
    if _received is not None:
        raise Terminated() if terminated() else KeyboardInterrupt
