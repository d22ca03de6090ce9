"""How a model reads digits that are not MNIST's: digit error, pair error, calibration and the
unsure rate, per source, from encoded images through the whole predict path (reading included);
and how often it flags things that are not digits. Prints the goals of issue 19, met or missed.

Sources (none used to train or to choose any recipe: choices are made on held-out MNIST training
digits, benchmarks/choose_deploy.py and digitcmp.reject; this script's draws use its own seed):
- mnist test: MNIST's 10000 test digits as tensors (digit error) and 5000 test pairs (pair error);
- handwriting (UCI): the 1797 8x8 handwritten digits scikit-learn ships (`pip install scikit-learn`),
  scaled up and written as PNG; skipped, with a note, when scikit-learn is missing;
- typeset: the digits in every font matplotlib ships, sizes, small rotations and positions drawn
  at random, a third saved as JPEG;
- pen strokes: each digit drawn as a jittered polyline with a random pen width;
- small drawings: the same strokes drawn small on the page's 280x280 pad with its 18 px pen (the
  digit 20-35 % of the pad: thick strokes for its size);
- photos and scans (simulated): MNIST *test* digits drawn by digitcmp.app.synthetic.render;
- phone photos on tables, ruled and squared notebooks, whiteboards, sticky notes, closeups, thick
  markers (either polarity), small digits on ruled and squared paper, low-resolution scans: MNIST
  *test* digits through every scene of digitcmp.app.synthetic.SCENES (sheet turned up to 30 degrees,
  perspective, 30-95 % of the frame, wood, fabric, stone or a dark desk, shadows, color casts, JPEG 60-90);
- non-digits: letters and signs drawn as pen strokes (an alphabet of this script's own, unlike the
  font letters reject.py trains on), marks, scribbles, dots, blobs, two- and three-digit numbers of
  MNIST test digits, and photos of a sheet with no digit; scored by the share flagged (refused as
  blank counts as flagged).
With --contact-sheet, a figure of every source's misread digits (up to 8 each), each image beside
the 14x14 view the model saw: where digits are lost.

    python benchmarks/robustness.py [--model PATH] [--json] [--per-source N] [--contact-sheet PNG]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent

from digitcmp.app.synthetic import (  # noqa: E402
    CASES,
    encode_image,
    non_digit_images,
    pen_strokes,
    render,
    small_drawings,
    typeset,
)


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
        images.append((encode_image(img), int(label)))
    return images


def simulated_photos(rng, per_case: int = 100) -> list[tuple[bytes, int]]:
    from digitcmp.core.data import load_mnist

    test = load_mnist("test")
    picks = rng.choice(len(test.labels), size=per_case * len(CASES), replace=False)
    return [(render(test.images[i], CASES[k % len(CASES)], rng), int(test.labels[i])) for k, i in enumerate(picks)]


def scene_source(scene: str):
    def make(rng, count: int = 200) -> list[tuple[bytes, int]]:
        from digitcmp.app.synthetic import SCENES
        from digitcmp.core.data import load_mnist

        test = load_mnist("test")
        picks = rng.choice(len(test.labels), size=count, replace=False)
        return [(SCENES[scene](test.images[i].astype(np.float32), rng), int(test.labels[i])) for i in picks]

    return make


def score_non_digits(predictor, images: list[tuple[bytes, str]]) -> dict:
    """The share of non-digit images flagged unsure (or refused as blank), overall and by kind."""
    from digitcmp.app.errors import InputError

    flagged: dict[str, list[bool]] = {}
    for data, kind in images:
        try:
            record, _ = answer_images(predictor, data, data)
        except InputError:
            flagged.setdefault(kind, []).append(True)
            continue
        flagged.setdefault(kind, []).append(record["unsure"])
    every = [f for kinds in flagged.values() for f in kinds]
    return {
        "images": len(every),
        "flagged": float(np.mean(every)),
        "by_kind": {k: float(np.mean(v)) for k, v in flagged.items()},
    }


def preprocessing_ms(rng, repeats: int = 40) -> float:
    """Median milliseconds to read one decoded 1000x1000 phone photo (one thread, decoding excluded)."""
    import time

    import cv2

    from digitcmp.app.synthetic import photo_on_table
    from digitcmp.core.data import load_mnist

    try:
        from digitcmp.app.images import decode, read_pixels
    except ImportError:  # a checkout from before images.py
        return float("nan")
    cv2.setNumThreads(1)
    test = load_mnist("test")
    times = []
    for k in range(repeats):
        data = photo_on_table(test.images[k].astype(np.float32), rng)
        pixels, is_ink = decode(data, "photo")
        pixels = np.ascontiguousarray(Image.fromarray(pixels).resize((1000, 1000)))
        started = time.perf_counter()
        read_pixels(pixels, is_ink)
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def metrics(read: np.ndarray, labels: np.ndarray, p_le: np.ndarray, truth: np.ndarray, unsure: np.ndarray) -> dict:
    """Digit and pair errors, calibration, worst class and unsure rate, from digits read [P, 2],
    their labels [P, 2], P(first <= second) [Q], the truth [Q] and the unsure flags [Q]."""
    from digitcmp.core.inference import expected_calibration_error

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


def answer_images(predictor, a: bytes, b: bytes) -> tuple[dict, list | None]:
    """predict's answer for two encoded images, and the two readings (None from a checkout from
    before images.py, d56c6fe, which is answered from files through its own predict, so that one
    script measures before and after)."""
    try:
        from digitcmp.app.images import read_image_pair
    except ImportError:
        with tempfile.TemporaryDirectory() as folder:
            paths = [Path(folder) / "a", Path(folder) / "b"]
            for path, data in zip(paths, (a, b)):
                path.write_bytes(data)
            return predictor.predict([str(p) for p in paths])[0], None
    x, readings = read_image_pair([("a", a), ("b", b)])
    return predictor.compare(x, ["a <= b"], [readings])[0], readings


@dataclass
class Misread:
    """A digit read wrong: the image, what the model saw (14x14), its class and what was read."""

    source: str
    image: bytes
    seen: np.ndarray | None
    label: int
    read: int
    unsure: bool


def score_images(predictor, images: list[tuple[bytes, int]], rng, source: str = "", misreads: list | None = None) -> dict:
    """Pairs of consecutive images (in a random order), read and answered as predict does; an image
    the reader refuses counts as a wrong, flagged answer. Each digit read wrong is added to misreads."""
    from digitcmp.app.errors import InputError

    order = rng.permutation(len(images))
    if len(order) % 2:
        order = order[:-1]
    labels = np.array([images[i][1] for i in order]).reshape(-1, 2)
    read, p_le, unsure = [], [], []
    for a, b in order.reshape(-1, 2):
        try:
            record, readings = answer_images(predictor, images[a][0], images[b][0])
        except InputError:
            read.append([-1, -1]), p_le.append(float(images[a][1] > images[b][1])), unsure.append(True)
            continue
        read.append(record["digits"]), p_le.append(record["p_le"]), unsure.append(record["unsure"])
        for k, index in enumerate((a, b)):
            if misreads is not None and record["digits"][k] != images[index][1]:
                seen = None if readings is None else readings[k].digit
                label, read_as = images[index][1], record["digits"][k]
                misreads.append(Misread(source, images[index][0], seen, label, read_as, record["unsure"]))
    return metrics(np.array(read), labels, np.array(p_le), labels[:, 0] <= labels[:, 1], np.array(unsure))


def contact_sheet(misreads: list[Misread], path: Path, per_source: int = 8) -> int:
    """A figure of misread digits, up to per_source of each source: each image beside the 14x14
    view the model saw, titled with its class, what was read and whether it was flagged. Returns
    how many are shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_source: dict[str, list[Misread]] = {}
    for m in misreads:
        by_source.setdefault(m.source, []).append(m)
    rows = [ms[:per_source] for ms in by_source.values()]
    if not rows:
        return 0
    columns = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), 2 * columns, figsize=(1.1 * 2 * columns, 1.35 * len(rows)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, row in enumerate(rows):
        axes[i, 0].text(-0.1, 0.5, row[0].source, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=7)
        for j, m in enumerate(row):
            photo = np.asarray(Image.open(io.BytesIO(m.image)).convert("RGB"))
            axes[i, 2 * j].imshow(photo)
            flag = "?" if m.unsure else "!"  # flagged unsure, or wrong without doubt
            axes[i, 2 * j].set_title(f"{m.label} as {m.read}{flag}", fontsize=6, pad=1)
            if m.seen is not None:
                axes[i, 2 * j + 1].imshow(m.seen, cmap="gray", vmin=0, vmax=255)
    fig.suptitle("Misread digits: each image, then the 14x14 view the model saw ('?' flagged unsure, '!' sure)", fontsize=8)
    fig.subplots_adjust(left=0.14, right=0.995, top=0.93, bottom=0.01, wspace=0.08, hspace=0.35)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return sum(len(r) for r in rows)


def score_mnist(predictor) -> dict:
    """All 10000 MNIST test digits (as tensors, two per pair) and 5000 test pairs of seed 0."""
    from digitcmp.core.data import generate_pair_sets, load_mnist

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


def goal_rows(rows: dict, non_digits: dict, ms: float) -> list[tuple[str, str, bool]]:
    """Issue 19's goals, kept by issue 28 (every source, the new scenes included): (goal, measured, met)."""
    others = {k: r for k, r in rows.items() if not k.startswith("mnist")}
    mnist = rows["mnist test (tensors)"]
    worst = max(others, key=lambda k: others[k]["pair_error"])
    worst_sure = max(others, key=lambda k: np.nan_to_num(others[k]["pair_error_when_sure"]))
    most_flagged = max(others, key=lambda k: others[k]["unsure"])
    return [
        (
            "pair error <= 2 % on every non-MNIST source",
            f"worst: {worst} {100 * others[worst]['pair_error']:.2f} %",
            all(r["pair_error"] <= 0.02 for r in others.values()),
        ),
        ("MNIST test pairs <= 0.4 %", f"{100 * mnist['pair_error']:.2f} %", mnist["pair_error"] <= 0.004),
        ("MNIST test digits <= 0.45 %", f"{100 * mnist['digit_error']:.2f} %", mnist["digit_error"] <= 0.0045),
        (
            "among answers not flagged: pair error <= 1 % on every source",
            f"worst: {worst_sure} {100 * others[worst_sure]['pair_error_when_sure']:.2f} %",
            all(np.nan_to_num(r["pair_error_when_sure"]) <= 0.01 for r in others.values()),
        ),
        ("non-digits: >= 95 % flagged", f"{100 * non_digits['flagged']:.1f} %", non_digits["flagged"] >= 0.95),
        (
            "clean digit sources: <= 10 % flagged",
            f"most: {most_flagged} {100 * others[most_flagged]['unsure']:.1f} %",
            all(r["unsure"] <= 0.10 for r in others.values()),
        ),
        ("reading a 1000x1000 photo <= 5 ms, one thread", f"{ms:.1f} ms (median)", ms <= 5.0),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-source", type=int, default=200, help="images per scene source (default 200)")
    parser.add_argument(
        "--contact-sheet", metavar="PNG", help="write a figure of the misread digits (each beside its 14x14 view)"
    )
    args = parser.parse_args()
    from digitcmp import load_model
    from digitcmp.app.synthetic import SCENES
    from digitcmp.core.perf import configure_process

    configure_process(1)
    predictor = load_model(args.model)
    rng = np.random.default_rng(args.seed)
    rows = {"mnist test (tensors)": score_mnist(predictor)}
    sources = {
        "handwriting (UCI, scikit-learn)": uci_handwriting,
        "typeset (matplotlib's fonts)": typeset,
        "pen strokes (synthetic)": pen_strokes,
        "small drawings on the pad": small_drawings,
        "photos and scans (simulated)": simulated_photos,
        **{scene: lambda r, s=scene: scene_source(s)(r, args.per_source) for scene in SCENES},
    }
    misreads: list[Misread] = []
    for name, make in sources.items():
        images = make(rng)
        if images is None:
            print(f"{name}: skipped (pip install scikit-learn)", file=sys.stderr)
            continue
        rows[name] = score_images(predictor, images, rng, name, misreads)
    if args.contact_sheet:
        shown = contact_sheet(misreads, Path(args.contact_sheet))
        print(f"contact sheet: {shown} of {len(misreads)} misread digits in {args.contact_sheet}", file=sys.stderr)
    non_digits = score_non_digits(predictor, non_digit_images(rng))
    ms = preprocessing_ms(rng)
    model = args.model or "shipped model"
    detector = getattr(predictor, "detector", None)  # absent in a checkout from before digitness.py
    judge = f"digit-ness threshold {detector.threshold:.4f}" if detector else "no digit-ness detector"
    print(f"model: {model} ({predictor.views} views; {judge})")
    columns = ["source", "digits", "digit error %", "pairs", "pair error %", "ECE %", "worst class error %", "unsure %"]
    print("| " + " | ".join([*columns, "pair error if sure %"]) + " |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['digits']} | {100 * r['digit_error']:.2f} | {r['pairs']} | {100 * r['pair_error']:.2f} | "
            f"{100 * r['ece']:.2f} | {100 * r['worst_class_error']:.1f} | {100 * r['unsure']:.1f} | "
            f"{100 * r['pair_error_when_sure']:.2f} |"
        )
    print()
    print(
        f"non-digits: {non_digits['images']} images, {100 * non_digits['flagged']:.1f} % flagged; by kind: "
        + ", ".join(f"{k} {100 * v:.0f} %" for k, v in non_digits["by_kind"].items())
    )
    print()
    print("| goal | measured | met |")
    print("|---|---|---|")
    for goal, measured, met in goal_rows(rows, non_digits, ms):
        print(f"| {goal} | {measured} | {'yes' if met else 'no'} |")
    if args.json:
        print(json.dumps({"model": model, "sources": rows, "non_digits": non_digits, "preprocessing_ms": ms}))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
