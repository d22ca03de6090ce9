"""Helpers for tests and benchmarks that start digitcmp in a process of its own."""

import signal


def sigint_as_usual() -> None:
    """preexec_fn for a child that a test interrupts with SIGINT: a shell starts background jobs
    with SIGINT ignored and children inherit that; Python raises KeyboardInterrupt only when the
    signal has its default disposition at start."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


MAX_LOAD_FACTOR = 4.0  # a machine this loaded is given at most this many times the quiet wait


def scaled_wait(seconds: float) -> float:
    """A start-up or stop wait for this machine as it is now: `seconds` on a quiet machine, longer
    in proportion to its load (the 1-minute load average over its usable cores, up to
    MAX_LOAD_FACTOR times), so that a test waiting for a server or a Ray node to start does not
    fail because the machine is busy, and still fails when the thing never starts."""
    import os

    from digitcmp.common.host import usable_cores

    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average here
        return seconds
    return seconds * min(MAX_LOAD_FACTOR, max(1.0, load / usable_cores()))
