"""Ctrl-C that is never lost.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT arrives. When that
is inside a weakref callback or a `__del__` (the garbage collector runs them at any allocation), the
exception is reported as "ignored" and the work simply goes on: a person's Ctrl-C is lost and the
command ends with exit 0. The handler installed here also *records* the request; the training loop
checks the record at every step and the CLI at its end, so an interrupt swallowed that way still stops
the work and still ends as "interrupted" (130).
"""

import signal
import sys
import threading

_requested = False


def _on_sigint(signum, frame) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


def _quiet_about_interrupts(unraisable) -> None:
    # The interrupt was recorded; the "Exception ignored in ..." report of it would only be noise.
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _requested:
        return
    sys.__unraisablehook__(unraisable)


def install():
    """Record Ctrl-C as well as raising it (main thread only); returns what restore() needs."""
    global _requested
    _requested = False
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None  # Ctrl-C is ignored or handled by someone else (a worker, an embedding program): leave it be
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_about_interrupts
    return signal.signal(signal.SIGINT, _on_sigint), previous_hook


def restore(saved) -> None:
    if saved is not None:
        handler, hook = saved
        signal.signal(signal.SIGINT, handler)
        sys.unraisablehook = hook


def requested() -> bool:
    """Whether Ctrl-C arrived since install(), caught or not."""
    return _requested


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C arrived, even if the first one was swallowed somewhere."""
    if _requested:
        raise KeyboardInterrupt
