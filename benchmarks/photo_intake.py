"""What reading a phone photo costs: CPU seconds to read one digit photo (decode and the whole
reader) for JPEGs of 12, 48 and 108 megapixels and a 12 MP HEIC, each read whole before (Pillow's
full decode, the way digitcmp read JPEGs before it used their DCT scaling) and reduced now,
alternately in one run. Prints the goal of issue 28 (a 48 MP JPEG read in <= 1 s of CPU).

    python benchmarks/photo_intake.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
from PIL import Image

from digitcmp.app import decode as decode_module
from digitcmp.app.images import read_image_digit


def photo(width: int, height: int, fmt: str, rng) -> bytes:
    """A digit-like stroke on grainy paper, as a phone would save it."""
    paper = np.full((height, width), 226, np.float32) + rng.normal(0, 6, (height, width))
    paper[height // 4 : 3 * height // 4, width // 2 - width // 60 : width // 2 + width // 60] = 30
    img = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)).convert("RGB")
    out = io.BytesIO()
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
        img.save(out, format="HEIF", quality=50)
    else:
        img.save(out, format="JPEG", quality=90)
    return out.getvalue()


def cpu_seconds(data: bytes, reduced: bool) -> float:
    saved = decode_module.READ_SIDE
    decode_module.READ_SIDE = saved if reduced else 10**9  # "whole": no reduction ever applies
    try:
        start = time.process_time()
        read_image_digit(data, "photo", max_pixels=200_000_000)
        return time.process_time() - start
    finally:
        decode_module.READ_SIDE = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = [("12 MP JPEG", 4000, 3000, "JPEG"), ("48 MP JPEG", 8000, 6000, "JPEG"),
             ("108 MP JPEG", 12000, 9000, "JPEG"), ("12 MP HEIC", 4000, 3000, "HEIF")]  # fmt: skip
    print(f"{'photo':<12} {'MB':>5} {'whole s':>8} {'reduced s':>10} {'ratio':>6}   (CPU seconds, median of {args.repeats})")
    results = {}
    for name, width, height, fmt in cases:
        data = photo(width, height, fmt, rng)
        whole, reduced = [], []
        for _ in range(args.repeats):  # alternately, so that the machine's load falls on both alike
            whole.append(cpu_seconds(data, reduced=False))
            reduced.append(cpu_seconds(data, reduced=True))
        w, r = statistics.median(whole), statistics.median(reduced)
        results[name] = r
        print(f"{name:<12} {len(data) / 2**20:5.1f} {w:8.3f} {r:10.3f} {w / r:6.1f}")
    goal = results["48 MP JPEG"]
    print(f"goal: a 48 MP JPEG read in <= 1 s of CPU: {goal:.3f} s, {'met' if goal <= 1.0 else 'missed'}")


if __name__ == "__main__":
    main()
