"""How a model reads digits that are not MNIST's: digit error, pair error, calibration and the
unsure rate, per source, from image files through the whole predict path (preprocessing included).

Sources (none used to train or to choose any recipe: choices are made on held-out MNIST training
digits, benchmarks/choose_deploy.py):
- mnist test: MNIST's 10000 test digits as tensors (digit error) and 5000 test pairs (pair error);
- handwriting (UCI): the 1797 8x8 handwritten digits scikit-learn ships (`pip install scikit-learn`),
  scaled up and written as PNG; skipped, with a note, when scikit-learn is missing;
- typeset: the digits in every font matplotlib ships (DejaVu, STIX, Computer Modern), sizes,
  small rotations and positions drawn at random, a third saved as JPEG;
- pen strokes: each digit drawn as a jittered polyline with a random pen width, like a mouse or a
  finger on a screen;
- photos and scans (simulated): MNIST *test* digits drawn as in tests/realistic_images.py (thick and
  thin strokes, small digits on large canvases, uneven noisy paper, colored ink, photos of a sheet
  with margins, transparency).

    python benchmarks/robustness.py [--model PATH] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from realistic_images import CASES, render  # noqa: E402

# One stroke path per digit in a unit box (x right, y down); pen strokes jitter these points.
STROKES = {
    0: [[(0.5, 0.05), (0.2, 0.2), (0.15, 0.5), (0.2, 0.8), (0.5, 0.95), (0.8, 0.8), (0.85, 0.5), (0.8, 0.2), (0.5, 0.05)]],
    1: [[(0.35, 0.2), (0.55, 0.05), (0.55, 0.95)]],
    2: [[(0.2, 0.25), (0.4, 0.07), (0.7, 0.1), (0.8, 0.3), (0.6, 0.55), (0.2, 0.92), (0.85, 0.92)]],
    3: [[(0.2, 0.12), (0.6, 0.05), (0.8, 0.25), (0.5, 0.48), (0.8, 0.7), (0.6, 0.95), (0.2, 0.88)]],
    4: [[(0.65, 0.95), (0.65, 0.05), (0.15, 0.65), (0.9, 0.65)]],
    5: [[(0.8, 0.07), (0.3, 0.07), (0.25, 0.45), (0.6, 0.4), (0.82, 0.65), (0.6, 0.93), (0.2, 0.88)]],
    6: [[(0.75, 0.08), (0.4, 0.2), (0.2, 0.6), (0.35, 0.92), (0.7, 0.88), (0.78, 0.62), (0.5, 0.48), (0.22, 0.62)]],
    7: [[(0.15, 0.08), (0.85, 0.08), (0.45, 0.95)]],
    8: [
        [(0.5, 0.48), (0.25, 0.3), (0.5, 0.05), (0.75, 0.3), (0.5, 0.48)],
        [(0.5, 0.48), (0.2, 0.72), (0.5, 0.95), (0.8, 0.72), (0.5, 0.48)],
    ],
    9: [[(0.78, 0.35), (0.5, 0.5), (0.22, 0.32), (0.45, 0.06), (0.78, 0.2), (0.75, 0.6), (0.6, 0.95)]],
}


def _png(img: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **options)
    return out.getvalue()


def uci_handwriting(rng) -> list[tuple[bytes, int]] | None:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    digits = load_digits()
    images = []
    for pixels, label in zip(digits.images, digits.target):
        ink = (pixels / 16.0 * 255).astype(np.uint8)
        img = Image.fromarray(255 - ink).resize((64, 64), Image.Resampling.BICUBIC)  # dark ink on paper
        images.append((_png(img), int(label)))
    return images


def typeset(rng) -> list[tuple[bytes, int]]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = [f for f in sorted(folder.glob("*.ttf")) if f.name.startswith(("DejaVu", "STIXGeneral", "cmr", "cmss", "cmtt"))]
    images = []
    for font_path in fonts:
        for digit in range(10):
            for _ in range(3):
                size = int(rng.integers(30, 90))
                font = ImageFont.truetype(str(font_path), size)
                canvas = Image.new("L", (size * 2, size * 2), 255)
                draw = ImageDraw.Draw(canvas)
                x, y = rng.integers(size // 4, size // 2, 2)
                draw.text((int(x), int(y)), str(digit), fill=int(rng.integers(0, 60)), font=font)
                canvas = canvas.rotate(float(rng.uniform(-8, 8)), fillcolor=255, resample=Image.Resampling.BICUBIC)
                if canvas.getextrema()[0] > 200:  # the font has no glyph for the digit (some of matplotlib's do not)
                    continue
                if rng.random() < 1 / 3:
                    images.append((_png(canvas, "JPEG", quality=int(rng.integers(40, 80))), digit))
                else:
                    images.append((_png(canvas), digit))
    return images


def pen_strokes(rng, per_digit: int = 40) -> list[tuple[bytes, int]]:
    images = []
    for digit, paths in STROKES.items():
        for _ in range(per_digit):
            side = int(rng.integers(80, 200))
            canvas = Image.new("L", (side, side), 255)
            draw = ImageDraw.Draw(canvas)
            width = int(rng.integers(max(2, side // 40), side // 10))
            slant = rng.uniform(-0.15, 0.15)
            for path in paths:
                points = []
                for px, py in path:
                    jx, jy = rng.normal(0, 0.03, 2)
                    x = 0.15 + 0.7 * (px + jx + slant * (0.5 - py))
                    y = 0.1 + 0.8 * (py + jy)
                    points.append((x * side, y * side))
                draw.line(points, fill=0, width=width, joint="curve")
            images.append((_png(canvas), digit))
    return images


def simulated_photos(rng, per_case: int = 100) -> list[tuple[bytes, int]]:
    from digitcmp.data import load_mnist

    test = load_mnist("test")
    picks = rng.choice(len(test.labels), size=per_case * len(CASES), replace=False)
    return [(render(test.images[i], CASES[k % len(CASES)], rng), int(test.labels[i])) for k, i in enumerate(picks)]


def metrics(read: np.ndarray, labels: np.ndarray, p_le: np.ndarray, truth: np.ndarray, unsure: np.ndarray) -> dict:
    """Digit and pair errors, calibration, worst class and unsure rate, from digits read [P, 2],
    their labels [P, 2], P(first <= second) [Q], the truth [Q] and the unsure flags [Q]."""
    from digitcmp.inference import expected_calibration_error

    wrong = (p_le > 0.5) != truth
    per_class = [float(np.mean(read[labels == c] != c)) for c in range(10) if np.any(labels == c)]
    return {
        "digits": int(labels.size),
        "pairs": int(len(p_le)),
        "digit_error": float(np.mean(read != labels)),
        "pair_error": float(np.mean(wrong)),
        "ece": expected_calibration_error(p_le, truth),
        "worst_class_error": max(per_class),
        "unsure": float(unsure.mean()),
        "pair_error_when_sure": float(np.mean(wrong[~unsure])) if (~unsure).any() else math.nan,
    }


def score_images(predictor, images: list[tuple[bytes, int]], rng, folder: Path) -> dict:
    """Pairs of consecutive images (in a random order), answered from files."""
    order = rng.permutation(len(images))
    if len(order) % 2:
        order = order[:-1]
    paths, labels = [], []
    for n, i in enumerate(order):
        data, label = images[i]
        path = folder / f"{n}.{'jpg' if data[:2] == bytes([255, 216]) else 'png'}"
        path.write_bytes(data)
        paths.append(str(path))
        labels.append(label)
    answers = predictor.predict(paths)
    labels = np.array(labels).reshape(-1, 2)
    read = np.array([a["digits"] for a in answers])
    p_le = np.array([a["p_le"] for a in answers])
    unsure = np.array([a["unsure"] for a in answers])
    return metrics(read, labels, p_le, labels[:, 0] <= labels[:, 1], unsure)


def score_mnist(predictor) -> dict:
    """All 10000 MNIST test digits (as tensors, two per pair) and 5000 test pairs of seed 0."""
    from digitcmp.data import generate_pair_sets, load_mnist

    test = load_mnist("test")
    x = test.pooled[:, 0].reshape(5000, 2, 14, 14)
    labels = test.labels.astype(int).reshape(5000, 2)
    answers = predictor.predict(x)
    read = np.array([a["digits"] for a in answers])
    *_, pairs_x, pairs_y, _ = generate_pair_sets(10, 0, test_nb=5000)
    p_le = np.array([a["p_le"] for a in predictor.predict(pairs_x)])
    pair_unsure = np.zeros(len(p_le), dtype=bool)  # the unsure rate below is the digit pairs' own
    row = metrics(read, labels, p_le, pairs_y.numpy().astype(bool), pair_unsure)
    return {**row, "unsure": float(np.mean([a["unsure"] for a in answers])), "pair_error_when_sure": math.nan}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from digitcmp import load_model
    from digitcmp.perf import configure_process

    configure_process(1)
    predictor = load_model(args.model)
    rng = np.random.default_rng(args.seed)
    rows = {"mnist test (tensors)": score_mnist(predictor)}
    sources = {
        "handwriting (UCI, scikit-learn)": uci_handwriting,
        "typeset (matplotlib's fonts)": typeset,
        "pen strokes (synthetic)": pen_strokes,
        "photos and scans (simulated)": simulated_photos,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in sources.items():
            images = make(rng)
            if images is None:
                print(f"{name}: skipped (pip install scikit-learn)", file=sys.stderr)
                continue
            folder = Path(tmp) / str(len(rows))
            os.makedirs(folder)
            rows[name] = score_images(predictor, images, rng, folder)
    model = args.model or "shipped model"
    print(f"model: {model} ({predictor.checkpoint.config.tta} views)")
    columns = ["source", "digits", "digit error %", "pairs", "pair error %", "ECE %", "worst class error %", "unsure %"]
    print("| " + " | ".join([*columns, "pair error if sure %"]) + " |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['digits']} | {100 * r['digit_error']:.2f} | {r['pairs']} | {100 * r['pair_error']:.2f} | "
            f"{100 * r['ece']:.2f} | {100 * r['worst_class_error']:.1f} | {100 * r['unsure']:.1f} | "
            f"{100 * r['pair_error_when_sure']:.2f} |"
        )
    if args.json:
        print(json.dumps({"model": model, "sources": rows}))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
