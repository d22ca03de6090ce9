"""Process-level settings that make small-batch CPU training fast."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache

import torch

# mallopt parameter numbers from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


@lru_cache(maxsize=1)
def tune_allocator() -> bool:
    """Keep freed scratch memory in the process instead of handing it back to the OS.

    By default glibc serves each large conv buffer with a fresh mmap and unmaps it on free, so
    every training step pays page faults for the same few megabytes. Raising the thresholds makes
    the heap reuse them. Returns whether the settings were applied (glibc only).
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


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """channels_last on the CPU: oneDNN's convolutions and max-pooling are much faster in it."""
    if device.type == "cpu":
        return model.to(memory_format=torch.channels_last)
    return model
