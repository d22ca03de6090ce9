"""Facts about the machine this process runs on, as the executors, the server and provenance need them."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from functools import cache

# mallopt parameter numbers from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_NODE_DETAIL = ""  # what an executor says about the node it runs this process on (the Ray node's id)


def note_node_detail(detail: str) -> None:
    """Called by an executor in its worker process: the detail is added to node_name()."""
    global _NODE_DETAIL
    _NODE_DETAIL = detail


@cache  # (read once per process: each run records it)
def cpu_model() -> str:
    """The CPU's model name, as the OS reports it ('Intel(R) Xeon(R) ...'), or the platform's word for it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (avx2, avx512f, ...), empty where the OS does not list them."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def node_name() -> str:
    """The machine that trains a run, as provenance records it; under Ray, with the Ray node's id."""
    name = f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cpus)"
    return f"{name}, {_NODE_DETAIL}" if _NODE_DETAIL else name


@cache
def tune_allocator() -> bool:
    """Keep freed scratch memory in the process instead of handing it back to the OS.

    By default glibc serves each large buffer (a training step's conv buffers, a photo's decoded
    pixels) with a fresh mmap and unmaps it on free, so every step or image pays page faults for
    the same few megabytes (a 1000x1000 JPEG's decode: 20-22 ms instead of 7). Raising the
    thresholds makes the heap reuse them. Every entry point applies it (the CLI, a sweep worker, a
    server process, a benchmark). Returns whether the settings were applied (glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    big = 1 << 30
    ok = mallopt(_M_MMAP_THRESHOLD, big) and mallopt(_M_TRIM_THRESHOLD, big) and mallopt(_M_TOP_PAD, 64 << 20)
    return bool(ok)
