"""Helpers for tests and benchmarks that start digitcmp in a process of its own."""

import signal


def sigint_as_usual() -> None:
    """preexec_fn for a child that a test interrupts with SIGINT: a shell starts background jobs
    with SIGINT ignored and children inherit that; Python raises KeyboardInterrupt only when the
    signal has its default disposition at start."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
