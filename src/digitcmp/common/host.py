"""Facts about the machine this process runs on, as the executors, the server and provenance need them."""

from __future__ import annotations

import os
import platform
import sys


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def node_name() -> str:
    """The machine that trains a run, as provenance records it; under Ray, with the Ray node's id."""
    name = f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cpus)"
    if "ray" in sys.modules:  # only when the Ray backend imported it: never imported for this
        import ray

        if ray.is_initialized():
            name += f", ray node {ray.get_runtime_context().get_node_id()[:12]}"
    return name
