"""Choose the deployment recipe on held-out MNIST *training* digits only (never the test split, never
a robustness set): each candidate trains on 24000 training pairs (re-paired every epoch) and is
scored in validation mode on 6000 pairs of the other 12000 training digits, as they are and under
this project's own distortions (augment.robust_augment with a fixed generator). Prints one row per
candidate.

    python benchmarks/choose_deploy.py [--device cuda] [--epochs 15]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from digitcmp.core.augment import robust_augment
from digitcmp.core.config import RunConfig
from digitcmp.core.data import draw_validation_pairs
from digitcmp.core.inference import AnswerSpec, SingleModel, answer, error_rates, expected_calibration_error
from digitcmp.core.perf import configure_process
from digitcmp.core.train import train_run
from digitcmp.study.experiments import PRESETS

FIT_PAIRS, HELD_OUT_PAIRS = 24000, 6000  # all 60000 training digits between them
CANDIDATES = {
    "lenet + robust": dict(tower="lenet", augment="robust"),
    "deep + robust": dict(tower="deep", augment="robust"),
    "deep + affine": dict(tower="deep", augment="affine"),
    "deep 64/128 + robust": dict(tower="deep", augment="robust", channels=(64, 128)),
    "deep 64/128 + mixed": dict(tower="deep", augment="mixed", channels=(64, 128)),
}


def digit_error(probs: torch.Tensor, classes: torch.Tensor) -> float:
    """Share of single digits read wrong, from digit posteriors [M, 2, 10] and classes [M, 2]."""
    return (probs.argmax(-1) != classes).double().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--candidates", nargs="*", default=list(CANDIDATES))
    args = parser.parse_args()
    configure_process(1)
    base = dict(PRESETS["deploy"])
    print(
        "| candidate | val pair err % | val digit err % | distorted pair err % | distorted digit err % | ECE % | train s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.candidates:
        overrides = {**base, **CANDIDATES[name], "validation": True, "pairs": FIT_PAIRS, "validation_pairs": HELD_OUT_PAIRS}
        if args.epochs:
            overrides["epochs"] = args.epochs
        config = RunConfig(**overrides)
        started = time.perf_counter()
        result, model, data = train_run(config, 0, device=args.device)
        seconds = time.perf_counter() - started
        model = model.cpu().float()
        spec = AnswerSpec(data.mean, data.std, config.tta, 0)
        raw = data.eval_x.cpu()
        _, (_, _, classes) = draw_validation_pairs(config.pairs, config.validation_pairs, 0)  # their digit classes
        y = data.eval_y.cpu()
        clean = answer(SingleModel(model), raw[None], [spec], digits=True)
        distorted_x = robust_augment(raw, torch.Generator().manual_seed(12345))
        distorted = answer(SingleModel(model), distorted_x[None], [spec], digits=True)
        row = {
            "val_pair": 100 * error_rates(clean.p_le[0], y).item(),
            "val_digit": 100 * digit_error(clean.digit_probs[0], classes),
            "dist_pair": 100 * error_rates(distorted.p_le[0], y).item(),
            "dist_digit": 100 * digit_error(distorted.digit_probs[0], classes),
            "ece": 100 * expected_calibration_error(clean.p_le[0], y),
        }
        print(
            f"| {name} | {row['val_pair']:.2f} | {row['val_digit']:.2f} | {row['dist_pair']:.2f} | "
            f"{row['dist_digit']:.2f} | {row['ece']:.2f} | {seconds:.0f} |",
            flush=True,
        )
        print("  " + json.dumps({"candidate": name, **row, "config": config.to_dict()}), flush=True)


if __name__ == "__main__":
    main()
