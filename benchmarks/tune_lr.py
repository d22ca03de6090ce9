"""Choose the default learning rates on a validation split of the training pairs.

Every run here uses RunConfig(validation=True): it trains on the first 800 of the 1000 training
pairs and is scored on the other 200. The test pairs are never looked at. Seeds 100-102 are kept
apart from the seeds 0-9 used for reported results.

    python benchmarks/tune_lr.py [--seeds 3] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ProcessPoolExecutor

from digitcmp.config import RunConfig

GRID = {"sgd": [0.01, 0.03, 0.1, 0.3, 0.6, 1.0], "adam": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]}
ROWS = {  # the study's architectures, as in Tables 1-4
    "fnn+bn": dict(arch="fnn"),
    "cnn+bn": dict(arch="cnn"),
    "split_cnn+aux": dict(arch="split_cnn", aux_weight=1.0),
    "siamese_cnn+aux": dict(arch="siamese_cnn", aux_weight=1.0),
}


def _validation_error(job: tuple[str, str, float, int]) -> tuple[str, str, float, int, float]:
    import torch

    from digitcmp.train import train_run

    torch.set_num_threads(1)
    row, optimizer, lr, seed = job
    config = RunConfig(**ROWS[row], optimizer=optimizer, lr=lr, validation=True)
    result, _, _ = train_run(config, seed, track_errors=False)
    return row, optimizer, lr, seed, result["test_error"]  # the held-out validation pairs here


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    jobs = [(row, opt, lr, 100 + s) for row in ROWS for opt, lrs in GRID.items() for lr in lrs for s in range(args.seeds)]
    errors: dict[tuple[str, str, float], list[float]] = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        for row, opt, lr, _, err in pool.map(_validation_error, jobs):
            errors.setdefault((row, opt, lr), []).append(err)
    print(f"mean validation error % over {args.seeds} seeds (800 train / 200 validation pairs, 25 epochs)")
    best = {}
    for opt, lrs in GRID.items():
        print(f"\n{opt:<6}" + "".join(f"{row:>18}" for row in ROWS) + f"{'mean':>10}")
        scores = {}
        for lr in lrs:
            cells = [100 * statistics.mean(errors[(row, opt, lr)]) for row in ROWS]
            scores[lr] = statistics.mean(cells)
            print(f"{lr:<6g}" + "".join(f"{c:>18.2f}" for c in cells) + f"{scores[lr]:>10.2f}")
        best[opt] = min(scores, key=scores.get)
    print("\nchosen (lowest mean over the four rows):", best)
    print(json.dumps({"chosen_lr": best, "seeds": args.seeds}))


if __name__ == "__main__":
    main()
