"""The reader's short paths (issue 29) against the whole line search, on every image of the
robustness benchmark (its sources at its seed: UCI handwriting where scikit-learn is installed,
typeset, pen strokes, pad drawings, simulated photos, every scene, the non-digits): how many read
exactly the same (digit, glyphs, doubt, region; must be all), and the reading time of each way,
alternating image by image.

    python benchmarks/reading_paths.py [--seed 0] [--per-source 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-source", type=int, default=200)
    args = parser.parse_args()
    import robustness
    from digitcmp.app import images
    from digitcmp.app.reading import ruling
    from digitcmp.app.synthetic import SCENES
    from digitcmp.common.host import tune_allocator

    tune_allocator()
    rng = np.random.default_rng(args.seed)
    makers = [robustness.uci_handwriting, robustness.typeset, robustness.pen_strokes, robustness.small_drawings,
              robustness.simulated_photos]  # fmt: skip
    makers += [lambda r, s=s: robustness.scene_source(s)(r, args.per_source) for s in SCENES]
    found = [make(rng) for make in makers]
    data = [image for source in found if source for image, _ in source]
    data += [image for image, _ in robustness.non_digit_images(rng)]
    short_paths = (images.could_hold_ruling, ruling.LINE_REACH)

    def read(image: bytes, short: bool):
        images.could_hold_ruling, ruling.LINE_REACH = short_paths if short else (lambda faint: True, 0.0)
        start = time.perf_counter()
        try:
            r = images.read_image_digit(image, "image")
            out = (r.digit.tobytes(), [g.tobytes() for g in r.glyphs], r.doubt, r.region)
        except ValueError as err:
            out = str(err)
        return out, time.perf_counter() - start

    same, times = 0, {True: [], False: []}
    for image in data:
        (fast, t_fast), (full, t_full) = read(image, True), read(image, False)
        same += fast == full
        times[True].append(t_fast)
        times[False].append(t_full)
    images.could_hold_ruling, ruling.LINE_REACH = short_paths
    fast_ms, full_ms = 1000 * np.array(times[True]), 1000 * np.array(times[False])
    print(f"{len(data)} images of the robustness benchmark (seed {args.seed}): {same} read the same both ways")
    ratio = np.median(fast_ms) / np.median(full_ms)
    print(f"reading, median ms: short paths {np.median(fast_ms):.2f}, whole line search {np.median(full_ms):.2f} "
          f"(ratio {ratio:.2f}); mean {fast_ms.mean():.2f} vs {full_ms.mean():.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
