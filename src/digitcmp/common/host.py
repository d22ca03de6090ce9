"""Facts about the machine this process runs on, as the executors, the server and provenance need them."""

from __future__ import annotations

import os
import platform
from functools import cache


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
