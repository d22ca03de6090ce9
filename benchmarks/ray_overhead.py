"""The Ray backend against the local one on this machine, same cores: the default reproduction
(`digitcmp reproduce`, 120 runs) with each backend in turn, on fresh stores, wall time end to end;
then the throughput ratio and the overhead per task. Each repetition runs both backends, in
alternating order.

    python benchmarks/ray_overhead.py [--jobs 2] [--reps 1] [--epochs N]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_sweep(backend: str, jobs: int, folder: Path, epochs: int | None) -> tuple[float, int]:
    argv = [sys.executable, "-m", "digitcmp", "reproduce", "--jobs", str(jobs), "--backend", backend, "--no-progress"]
    argv += ["--db", str(folder / f"{backend}.sqlite"), "--out", str(folder / backend)]
    if epochs:
        argv += ["--epochs", str(epochs)]
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    with sqlite3.connect(folder / f"{backend}.sqlite") as conn:
        (runs,) = conn.execute("SELECT COUNT(*) FROM runs").fetchone()
    return seconds, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="shorter runs, for a quick look (default: the study's)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"local": [], "ray": []}
    runs = 0
    for rep in range(args.reps):
        order = ("local", "ray") if rep % 2 == 0 else ("ray", "local")
        for backend in order:
            with tempfile.TemporaryDirectory() as tmp:
                seconds, runs = one_sweep(backend, args.jobs, Path(tmp), args.epochs)
            times[backend].append(seconds)
            print(f"rep {rep}: {backend}: {seconds:.1f} s for {runs} runs", flush=True)
    local, remote = statistics.median(times["local"]), statistics.median(times["ray"])
    print(f"median wall time, {args.jobs} cores: local {local:.1f} s, ray {remote:.1f} s")
    print(f"ray throughput / local throughput: {local / remote:.3f}")
    print(f"ray overhead per run: {(remote - local) / runs * args.jobs:.3f} s of a core ({runs} runs, Ray start included)")


if __name__ == "__main__":
    main()
