"""Teach a trained digit model to say "not a digit": outlier exposure, then a threshold.

Outlier exposure (Hendrycks et al., 2019): the digit tower is fine-tuned on its digits (the
usual cross-entropy) and on synthetic non-digits (synthetic.py: letters in many fonts, signs,
scribbles, blobs, dots, marks, numbers written as one stroke), whose target is the uniform
posterior; a digit whose most likely class then has less posterior than a threshold is "not a
digit". Only the tower's weights move (batch norm keeps its statistics), so the model's answers on
digits stay those of the same function, and the comparison stays exact.

Both kinds of images go through the same reading as people's images (images.read_ink), so that
the model learns on what it will see. The threshold is chosen on held-out data only: MNIST
*training* digits that the fine-tuning did not use, read as images, and non-digits drawn with other
seeds and fonts that the fine-tuning never saw; never on a test digit or a robustness source.

    python -m digitcmp.reject --base deploy.safetensors --save deploy.safetensors
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint, save_checkpoint
from .data import load_mnist
from .images import pool, read_ink
from .inputs import InputError
from .seeds import derive_seed
from .synthetic import NON_DIGIT_KINDS, fonts, non_digit_ink

HELD_OUT_DIGITS = 5000  # the last MNIST training digits: never in the fine-tuning, they set the threshold
CLEAN_FLAGGED = 0.02  # the share of held-out digits the threshold may call "not a digit"


def read_as_image(ink: np.ndarray) -> torch.Tensor | None:
    """Ink (light on dark) read as an image is: the [14, 14] digit the model would see, or None when
    the reading finds several glyphs (then the model reads each glyph, not this) or no ink."""
    try:
        fields, _, _, _ = read_ink(ink.astype(np.float32), "synthetic")
    except InputError:
        return None
    return pool(fields[0]) if len(fields) == 1 else None


def non_digits(count: int, seed: int, font_kind: str) -> torch.Tensor:
    """count non-digits [count, 14, 14] of every kind in turn, as the model sees them."""
    rng = np.random.default_rng(seed)
    font_list = fonts(font_kind)
    train = load_mnist("train")
    digits = (train.images[:-HELD_OUT_DIGITS], train.labels[:-HELD_OUT_DIGITS])
    out = []
    while len(out) < count:
        kind = NON_DIGIT_KINDS[len(out) % len(NON_DIGIT_KINDS)]
        seen = read_as_image(non_digit_ink(kind, rng, font_list, digits))
        if seen is not None:
            out.append(seen)
    return torch.stack(out)


def digits_as_images(indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST training digits read as images are (stroke width brought to MNIST's, recentered)."""
    train = load_mnist("train")
    seen, labels = [], []
    for i in indices:
        digit = read_as_image(np.pad(train.images[i].astype(np.float32), 4))
        if digit is not None:
            seen.append(digit)
            labels.append(int(train.labels[i]))
    return torch.stack(seen), torch.tensor(labels)


def max_posterior(tower, x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat(
            [tower((x[i : i + 2000, None] - mean) / std).softmax(-1).max(-1).values for i in range(0, len(x), 2000)]
        )


def fine_tune(checkpoint, steps: int, seed: int, weight: float, lr: float, log=print) -> dict:
    """Fine-tune the checkpoint's tower in place; returns what was measured on the way."""
    from .augment import robust_augment

    tower = checkpoint.model.towers[0]
    mean, std = checkpoint.mean, checkpoint.std
    train = load_mnist("train")
    pool_size = len(train.labels) - HELD_OUT_DIGITS
    rng = np.random.default_rng(derive_seed(seed, "reject", 0))
    started = time.perf_counter()
    # Positives: MNIST as the study's tensors give it, and as images are read (half each).
    raw_x, raw_y = train.pooled[:pool_size, 0], torch.from_numpy(train.labels[:pool_size].astype(np.int64))
    read_x, read_y = digits_as_images(rng.choice(pool_size, size=12000, replace=False))
    negatives = non_digits(8000, derive_seed(seed, "reject", 1), "train")
    log(f"data: {len(read_x)} digits read as images, {len(negatives)} non-digits ({time.perf_counter() - started:.0f} s)")
    generator = torch.Generator().manual_seed(derive_seed(seed, "reject", 2))
    tower.eval()  # batch norm keeps the statistics of the digits it was trained on
    for p in tower.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(tower.parameters(), lr=lr)
    batch = 128
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        a = torch.randint(len(raw_x), (batch // 2,), generator=generator)
        b = torch.randint(len(read_x), (batch // 2,), generator=generator)
        n = torch.randint(len(negatives), (batch // 2,), generator=generator)
        x = torch.cat([raw_x[a], read_x[b], negatives[n]])
        # The deploy recipe's distortions on both kinds, so that a distorted digit stays a digit.
        x = robust_augment(x.view(-1, 2, 14, 14), generator, share=0.5).view(-1, 14, 14)
        logits = tower(((x - mean) / std)[:, None])
        y = torch.cat([raw_y[a], read_y[b]])
        digit_loss = F.cross_entropy(logits[:batch], y)
        outlier_loss = (torch.logsumexp(logits[batch:], -1) - logits[batch:].mean(-1)).mean()  # CE to uniform
        loss = digit_loss + weight * outlier_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 200 == 0 or step == steps - 1:
            log(f"step {step}: digit loss {digit_loss.item():.4f}, outlier loss {outlier_loss.item():.4f}")
    tower.eval()
    return {"seconds": time.perf_counter() - started}


def choose_threshold(checkpoint, seed: int) -> dict:
    """The threshold on held-out data: the largest posterior below which at most CLEAN_FLAGGED of the
    held-out MNIST training digits (read as images) fall; and what it flags of held-out non-digits."""
    tower = checkpoint.model.towers[0]
    train = load_mnist("train")
    held = np.arange(len(train.labels) - HELD_OUT_DIGITS, len(train.labels))
    digits, labels = digits_as_images(held)
    negatives = non_digits(2000, derive_seed(seed, "reject", 3), "held out")
    clean = max_posterior(tower, digits, checkpoint.mean, checkpoint.std)
    other = max_posterior(tower, negatives, checkpoint.mean, checkpoint.std)
    threshold = float(torch.quantile(clean.double(), CLEAN_FLAGGED))
    with torch.no_grad():
        read = torch.cat(
            [
                tower(((digits[i : i + 2000] - checkpoint.mean) / checkpoint.std)[:, None]).argmax(-1)
                for i in range(0, len(digits), 2000)
            ]
        )
    per_kind = {}
    kinds = np.array([NON_DIGIT_KINDS[i % len(NON_DIGIT_KINDS)] for i in range(len(negatives))])
    for kind in NON_DIGIT_KINDS:
        per_kind[kind] = float((other[torch.from_numpy(kinds == kind)] < threshold).double().mean())
    return {
        "threshold": threshold,
        "held_out_digits": len(digits),
        "held_out_digit_error": float((read != labels).double().mean()),
        "clean_flagged": float((clean < threshold).double().mean()),
        "held_out_non_digits": len(negatives),
        "non_digits_flagged": float((other < threshold).double().mean()),
        "flagged_by_kind": per_kind,
    }


def recorded_test_error(checkpoint, seed: int) -> float:
    """The model's error on its recipe's test pairs, answered as predict answers (the checkpoint's
    test_error metadata, written again because the weights changed)."""
    from .batches import prepare_data
    from .inference import SingleModel, answer, error_rates

    data = prepare_data(checkpoint.config, seed)
    p_le = answer(SingleModel(checkpoint.model), data.eval_x[None], [checkpoint.spec]).p_le
    return float(error_rates(p_le, data.eval_y[None])[0])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the trained checkpoint (digitcmp train --preset deploy --save ...)")
    parser.add_argument("--save", required=True, help="where to write the fine-tuned checkpoint")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--weight", type=float, default=0.5, help="weight of the outlier loss")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from .perf import configure_process

    configure_process(1)
    torch.manual_seed(args.seed)
    checkpoint = load_checkpoint(args.base)
    before = choose_threshold(checkpoint, args.seed)
    print(f"before: {before}")
    trained = fine_tune(checkpoint, args.steps, args.seed, args.weight, args.lr)
    after = choose_threshold(checkpoint, args.seed)
    print(f"after ({trained['seconds']:.0f} s): {after}")
    recipe = f"outlier exposure: {args.steps} steps, weight {args.weight}, lr {args.lr}, seed {args.seed}"
    model_seed = int(checkpoint.metadata.get("seed") or 0)
    test_error = recorded_test_error(checkpoint, model_seed)
    print(f"test error on the recipe's own test pairs (recorded, not used for any choice): {100 * test_error:.2f} %")
    save_checkpoint(
        args.save,
        checkpoint.model.state_dict(),
        checkpoint.config,
        checkpoint.mean,
        checkpoint.std,
        {"seed": model_seed, "test_error": test_error},
        extra={
            "reject_below": repr(after["threshold"]),
            "reject_recipe": recipe,
            "reject_held_out": (
                f"{after['clean_flagged']:.4f} of {after['held_out_digits']} held-out digits and "
                f"{after['non_digits_flagged']:.4f} of {after['held_out_non_digits']} held-out non-digits flagged"
            ),
        },
    )
    print(f"saved {args.save} (reject_below {after['threshold']:.4f})")


if __name__ == "__main__":
    main()
