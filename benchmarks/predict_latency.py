"""Latency of one answer from two PNG files, with the model loaded, on one CPU thread: reading and
preprocessing both images, the test-time views and the answer. Prints p50 and p99 over --reps.

    python benchmarks/predict_latency.py [--model PATH] [--reps 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--reps", type=int, default=300)
    args = parser.parse_args()
    from digitcmp import load_model
    from digitcmp.core.data import load_mnist
    from digitcmp.core.perf import configure_process

    configure_process(1)
    started = time.perf_counter()
    predictor = load_model(args.model)
    load_seconds = time.perf_counter() - started
    test = load_mnist("test")
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(2):  # dark ink on paper at 280x280, as a phone or a drawing pad would give
            img = Image.fromarray(255 - test.images[i]).resize((280, 280), Image.Resampling.BICUBIC)
            paths.append(Path(tmp) / f"{i}.png")
            img.save(paths[-1])
        for _ in range(10):  # warm-up
            predictor.predict(paths)
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            predictor.predict(paths)
            times.append(time.perf_counter() - t)
    ms = 1000 * np.array(times)
    views = predictor.checkpoint.config.tta
    print(f"model load {1000 * load_seconds:.0f} ms; one pair from two 280x280 PNG files, {views} views, 1 thread:")
    print(f"p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms (n = {args.reps})")


if __name__ == "__main__":
    main()
