"""The float32 matmul peak of this process's device, measured the same way by every benchmark."""

from __future__ import annotations

import statistics
import time


def matmul_gflops(device: str) -> float:
    """float32 matmul GFLOP/s: 1024^3 on the CPU (as many threads as the process has), 8192^3 on a GPU."""
    import torch

    n = 8192 if device == "cuda" else 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = []
    for _ in range(12):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return 2 * n**3 / statistics.median(times[2:]) / 1e9
