"""Fine-tune the shipped model on digits as the reader serves them (tried on held-out data: docs/model_card.md).

MNIST's digits are clean; a photo, a notebook page or a marker on a board reaches the model only
through images.py, which leaves its own traces (strokes rebuilt to MNIST's width, a line's
remnant, a blurred scan's softness). So the model also learns from MNIST *training* digits drawn
into every scene of synthetic.SCENES and read back by images.py, mixed with MNIST's own digits
under the deploy recipe's augmentation.

Honest choices: the digits are split by index, 0-47999 to fit and 48000-59999 held out (the
shipped model saw both clean; the scenes are new to it), and the held-out digits are drawn in
scenes from another seed. Candidates (learning rate x epochs) are chosen by their error on
held-out pairs, served and clean together; no test digit and no robustness source takes part.

    python -m digitcmp.app.train_served --out deploy.safetensors [--fit-digits 6000] [--cache DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from torch import nn

    from ..core.checkpoint import Checkpoint
    from ..core.config import RunConfig
    from ..core.records import RunResult

FIT_INDICES, HELD_OUT_INDICES = range(0, 48000), range(48000, 60000)
FIT_SCENE_SEED, HELD_OUT_SCENE_SEED = 2801, 2802  # apart from the tests' and the benchmark's seeds
CANDIDATE_LRS = (3e-4, 1e-3)


def render_scenes(folder: Path, indices: Sequence[int], count: int, seed: int) -> None:
    """`count` MNIST training digits picked from `indices` (by the seed), each drawn in a scene of
    synthetic.SCENES in turn, written to folder as <n>-<class>.img (encoded bytes). Images already
    there are kept: an interrupted render resumes when run again with the same arguments."""
    from ..core.data import load_mnist
    from .synthetic import SCENES

    train = load_mnist("train")
    rng = np.random.default_rng(seed)
    picks = rng.choice(np.asarray(indices), size=count, replace=False)
    scenes = list(SCENES.values())
    folder.mkdir(parents=True, exist_ok=True)
    for n, index in enumerate(picks):
        scene_rng = np.random.default_rng([seed, n])  # each image its own stream: a resumed render draws the same
        path = folder / f"{n:05d}-{int(train.labels[index])}.img"
        if not path.exists():
            data = scenes[n % len(scenes)](train.images[index].astype(np.float32), scene_rng)
            temporary = path.with_suffix(".part")
            temporary.write_bytes(data)
            temporary.replace(path)


def read_scenes(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The rendered images of a folder read by images.py: digits [N, 14, 14] 0..255 and classes [N]."""
    from .images import read_image_digit

    digits, classes = [], []
    for path in sorted(folder.glob("*.img")):
        digits.append(read_image_digit(path.read_bytes(), path.name).digit)
        classes.append(int(path.stem.split("-")[1]))
    return torch.from_numpy(np.stack(digits)), torch.tensor(classes)


def pairs_of(
    digits: torch.Tensor, classes: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits [N, 14, 14] paired at random: x [N // 2, 2, 14, 14], y [N // 2], classes [N // 2, 2]."""
    order = torch.randperm(len(digits), generator=generator)[: len(digits) // 2 * 2]
    x, c = digits[order].view(-1, 2, 14, 14), classes[order].view(-1, 2)
    return x, (c[:, 0] <= c[:, 1]).long(), c


# Digits [N, 14, 14] and their classes [N].
Digits = tuple[torch.Tensor, torch.Tensor]


def fine_tune(
    base: Checkpoint, served: Digits, clean: Digits, held_out: Digits, lr: float, epochs: int, seed: int = 0
) -> tuple[nn.Module, RunConfig, RunResult]:
    """The base checkpoint trained further on served and clean digits: (model, its config, its result with
    the per-epoch held-out errors)."""
    from ..core.batches import PairData
    from ..core.inference import SingleModel
    from ..core.train import fit

    generator = torch.Generator().manual_seed(seed)
    digits, classes = torch.cat([served[0], clean[0]]), torch.cat([served[1], clean[1]])
    train_x, train_y, train_classes = pairs_of(digits, classes, generator)
    eval_x, eval_y, _ = pairs_of(*held_out, generator)
    config = dataclasses.replace(base.config, epochs=epochs, lr=lr, pairs=len(train_x), validation=True)
    data = PairData(train_x, train_y, train_classes, eval_x, eval_y, base.mean, base.std)  # the base's normalization
    model = base.model
    (result,) = fit(SingleModel(model), [data], config, [seed])
    model.eval()
    return model, config, result


def main(argv: list[str] | None = None) -> int:
    """Fine-tune the shipped model on served digits (python -m digitcmp.app.train_served); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the fine-tuned checkpoint to write")
    parser.add_argument("--fit-digits", type=int, default=6000, help="served digits to fit on (default 6000)")
    parser.add_argument("--held-out-digits", type=int, default=1000, help="served digits to choose on (default 1000)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--cache", default=os.path.join(Path.home(), ".cache", "digitcmp", "served"))
    parser.add_argument("--render-only", action="store_true", help="render the scenes and stop")
    args = parser.parse_args(argv)
    from ..core.checkpoint import load_checkpoint, save_checkpoint
    from ..core.data import load_mnist
    from ..core.perf import configure_process
    from .predict import shipped_model_path

    configure_process(1)
    cache = Path(args.cache)
    started = time.perf_counter()
    render_scenes(cache / f"fit-{FIT_SCENE_SEED}", FIT_INDICES, args.fit_digits, FIT_SCENE_SEED)
    render_scenes(cache / f"held-out-{HELD_OUT_SCENE_SEED}", HELD_OUT_INDICES, args.held_out_digits, HELD_OUT_SCENE_SEED)
    print(f"scenes rendered in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.render_only:
        return 0
    served = read_scenes(cache / f"fit-{FIT_SCENE_SEED}")
    served_held_out = read_scenes(cache / f"held-out-{HELD_OUT_SCENE_SEED}")
    train = load_mnist("train")
    pooled, labels = train.pooled[:, 0].float(), torch.from_numpy(train.labels.astype(np.int64))
    rng = np.random.default_rng(0)
    clean_fit = rng.choice(np.asarray(FIT_INDICES), size=3 * args.fit_digits, replace=False)  # served: a quarter
    clean_held = rng.choice(np.asarray(HELD_OUT_INDICES), size=args.held_out_digits, replace=False)
    clean = (pooled[clean_fit], labels[clean_fit])
    held_out = (torch.cat([served_held_out[0], pooled[clean_held]]), torch.cat([served_held_out[1], labels[clean_held]]))
    rows, best = [], None
    for lr in CANDIDATE_LRS:
        base = load_checkpoint(shipped_model_path())
        model, config, result = fine_tune(base, served, clean, held_out, lr, args.epochs)
        errors = [e.validation_error for e in result.epochs]  # held-out pairs: validation mode
        rows.append({"lr": lr, "held_out_pair_error_by_epoch": errors})
        print(json.dumps(rows[-1]), flush=True)
        if best is None or errors[-1] < best[0]:
            best = (errors[-1], model, config, base, result)
    _, model, config, base, result = best
    # The config stays the base's (the recipe of its weights and how it answers: views, normalization);
    # the fine-tuning is recorded beside it.
    fine_tuning = {
        "script": "python -m digitcmp.app.train_served",
        "lr": config.lr,
        "epochs": config.epochs,
        "served_digits": int(len(served[1])),
        "clean_digits": int(len(clean[1])),
        "candidates": rows,
    }
    notes = {"fine_tuned": json.dumps(fine_tuning)}
    save_checkpoint(args.out, model.state_dict(), base.config, base.mean, base.std, result, notes)
    print(f"chosen lr {config.lr:g}, {config.epochs} epochs; written {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    sys.exit(main())
