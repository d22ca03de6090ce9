"""Train the digit-ness detector (digitness.py) and choose its threshold on held-out data.

Positives: MNIST training digits, as the study's tensors give them and as images are read
(images.read_ink: stroke width brought to MNIST's, recentered), digits typeset in the training
fonts and MNIST training digits seen at a low resolution (other styles), with the shipped model's own
distortions (augment.robust_augment), so that a distorted digit stays a digit. Negatives:
synthetic non-digits (synthetic.py) in the training fonts, each read as an image is, and with the
same distortions. A number whose digits are read apart (two glyphs) is no negative: the model
then reads each glyph, so only numbers read as one glyph are.

The threshold is chosen on data the training never saw: the last HELD_OUT_DIGITS MNIST training
digits (read as images) and non-digits drawn with another seed in the held-out fonts. It is the
score above which at most CLEAN_FLAGGED of the held-out digits fall; never a test digit, never a
robustness source.

    python -m digitcmp.app.train_digitness --save src/digitcmp/app/shipped/digitness.safetensors
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..core.data import load_mnist
from ..core.seeds import derive_seed
from ..core.train import Stepper
from .digitness import Detector, DigitnessNet, save_detector
from .errors import InputError
from .images import pool, read_ink
from .synthetic import NON_DIGIT_KINDS, fonts, non_digit_ink

LR = 2e-3  # Adam's rate at the start of the cosine schedule
HELD_OUT_DIGITS = 5000  # the last MNIST training digits: never trained on, they set the threshold
CLEAN_FLAGGED = 0.01  # the share of held-out digits the threshold may call "not a digit"


def read_as_image(ink: np.ndarray) -> torch.Tensor | None:
    """Ink (light on dark) read as an image is: the [14, 14] digit a model would see, or None when
    the reading finds several glyphs (a model then reads each) or no ink."""
    try:
        fields, _, _, _ = read_ink(ink.astype(np.float32), "synthetic")
    except InputError:
        return None
    return torch.from_numpy(pool(fields[0])) if len(fields) == 1 else None


def non_digits(count: int, seed: int, font_kind: str) -> tuple[torch.Tensor, list[str]]:
    """count non-digits [count, 14, 14] of every kind in turn, as a model sees them, and their kinds."""
    rng = np.random.default_rng(seed)
    font_list = fonts(font_kind)
    train = load_mnist("train")
    digits = (train.images[:-HELD_OUT_DIGITS], train.labels[:-HELD_OUT_DIGITS])
    out, kinds = [], []
    while len(out) < count:
        kind = NON_DIGIT_KINDS[len(out) % len(NON_DIGIT_KINDS)]
        seen = read_as_image(non_digit_ink(kind, rng, font_list, digits))
        if seen is not None:
            out.append(seen)
            kinds.append(kind)
    return torch.stack(out), kinds


def digits_as_images(indices: np.ndarray) -> torch.Tensor:
    """MNIST training digits read as images are."""
    train = load_mnist("train")
    seen = [read_as_image(np.pad(train.images[i].astype(np.float32), 4)) for i in indices]
    return torch.stack([s for s in seen if s is not None])


def other_digits(count: int, seed: int) -> torch.Tensor:
    """Digits that are not MNIST's, as a model sees them: half typeset in the training fonts, half
    MNIST training digits seen at a low resolution (8 to 12 pixels a side, then enlarged, like a
    small scan), so that a digit of another style is not taken for a non-digit."""
    import cv2

    from .synthetic import text_ink

    rng = np.random.default_rng(seed)
    font_list = fonts("train")
    train_split = load_mnist("train")
    out = []
    while len(out) < count:
        if len(out) % 2:
            ink = text_ink(str(int(rng.integers(10))), font_list[int(rng.integers(len(font_list)))], rng)
            if ink is None:
                continue
        else:
            digit = train_split.images[int(rng.integers(len(train_split.labels) - HELD_OUT_DIGITS))]
            side = int(rng.integers(8, 13))
            small = cv2.resize(digit.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
            ink = cv2.resize(small, (64, 64), interpolation=cv2.INTER_CUBIC)
        seen = read_as_image(np.pad(np.clip(ink, 0, 255), 4))
        if seen is not None:
            out.append(seen)
    return torch.stack(out)


@dataclass(frozen=True)
class DataSizes:
    """How many examples the detector trains and chooses its threshold on (the defaults are the
    shipped detector's; a smoke test takes a few of each)."""

    digits_read: int = 10000  # MNIST training digits read as images are
    other_digits: int = 6000  # typeset digits and small scans
    non_digits: int = 16000
    held_out_non_digits: int = 3000
    held_out_digits: int = HELD_OUT_DIGITS  # the last MNIST training digits, read as images


def build_net(seed: int) -> DigitnessNet:
    """The detector's initial weights, drawn from the seed alone (the global generator untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DigitnessNet()


def train(
    steps: int, seed: int, sizes: DataSizes = DataSizes(), log: Callable[[str], None] = print
) -> tuple[DigitnessNet, dict]:
    """The detector trained for `steps` batches of 256 (a quarter MNIST digits as the study's
    tensors give them, a quarter digits read as images, half non-digits, every one distorted as the
    shipped model's training distorts digits), Adam with a cosine rate; every draw from a
    generator seeded from `seed`."""
    from ..core.augment import robust_augment

    train_split = load_mnist("train")
    kept = len(train_split.labels) - HELD_OUT_DIGITS
    rng = np.random.default_rng(derive_seed(seed, "digitness", 0))
    started = time.perf_counter()
    raw = train_split.pooled[:kept, 0]
    read = torch.cat(
        [
            digits_as_images(rng.choice(kept, size=sizes.digits_read, replace=False)),
            other_digits(sizes.other_digits, derive_seed(seed, "digitness", 4)),
        ]
    )
    negatives, _ = non_digits(sizes.non_digits, derive_seed(seed, "digitness", 1), "train")
    seconds = time.perf_counter() - started
    log(f"data: {len(raw)} digits, {len(read)} read as images, {len(negatives)} non-digits ({seconds:.0f} s)")
    net = build_net(seed)
    # The optimizing half of the core's training loop (core.train.Stepper); the batches are the detector's own.
    stepper = Stepper(torch.optim.Adam(net.parameters(), lr=LR), "cosine", steps)
    generator = torch.Generator().manual_seed(derive_seed(seed, "digitness", 2))
    batch = 256
    for step in range(steps):
        a = raw[torch.randint(len(raw), (batch // 4,), generator=generator)]  # [batch // 4, 14, 14]
        b = read[torch.randint(len(read), (batch // 4,), generator=generator)]
        n = negatives[torch.randint(len(negatives), (batch // 2,), generator=generator)]
        # The shipped model's distortions act on pairs: the batch is seen as batch // 2 pairs.
        x = robust_augment(torch.cat([a, b, n]).view(-1, 2, 14, 14), generator, share=0.5).view(-1, 14, 14)
        y = torch.cat([torch.zeros(batch // 2), torch.ones(batch // 2)])  # 1: not a digit
        loss = F.binary_cross_entropy_with_logits(net(x), y)
        stepper.step(loss)
        if step % 500 == 0 or step == steps - 1:
            log(f"step {step}: loss {loss.item():.4f}")
    net.eval()
    return net, {"seconds": time.perf_counter() - started}


def choose_threshold(net: DigitnessNet, seed: int, sizes: DataSizes = DataSizes()) -> dict:
    """The threshold on held-out data, and what it flags there, overall and by kind."""
    train_split = load_mnist("train")
    held = np.arange(len(train_split.labels) - HELD_OUT_DIGITS, len(train_split.labels))[: sizes.held_out_digits]
    digits = digits_as_images(held)
    negatives, kinds = non_digits(sizes.held_out_non_digits, derive_seed(seed, "digitness", 3), "held out")
    detector = Detector(net, 0.5, {})
    clean, other = detector.scores(digits), detector.scores(negatives)
    threshold = float(torch.quantile(clean.double(), 1 - CLEAN_FLAGGED))
    kinds = np.array(kinds)
    return {
        "threshold": threshold,
        "held_out_digits": len(digits),
        "digits_flagged": float((clean > threshold).double().mean()),
        "held_out_non_digits": len(negatives),
        "non_digits_flagged": float((other > threshold).double().mean()),
        "by_kind": {k: float((other[torch.from_numpy(kinds == k)] > threshold).double().mean()) for k in NON_DIGIT_KINDS},
    }


def main(argv: list[str] | None = None) -> None:
    """Train the detector, choose its threshold and save it (python -m digitcmp.app.train_digitness)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", required=True, help="where to write the detector (safetensors)")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from ..core.perf import configure_process

    configure_process(1)
    net, trained = train(args.steps, args.seed)
    chosen = choose_threshold(net, args.seed)
    print(f"held out ({trained['seconds']:.0f} s of data and training): {chosen}")
    save_detector(
        args.save,
        net,
        chosen["threshold"],
        {
            "recipe": f"python -m digitcmp.app.train_digitness --steps {args.steps} --seed {args.seed}",
            "held_out": (
                f"{chosen['digits_flagged']:.4f} of {chosen['held_out_digits']} held-out MNIST training digits and "
                f"{chosen['non_digits_flagged']:.4f} of {chosen['held_out_non_digits']} held-out non-digits flagged"
            ),
        },
    )
    print(f"saved {args.save} (threshold {chosen['threshold']:.4f})")


if __name__ == "__main__":
    main()
