"""Choose the default learning rates on a validation split of the training pairs.

Every run here uses RunConfig(validation=True): it trains on the first 800 of the 1000 training
pairs and is scored on the other 200. The test pairs are never looked at. Seeds 100-102 are kept
apart from the seeds 0-9 used for reported results.

    python benchmarks/tune_lr.py [--seeds 3] [--jobs 2]            # one rate per optimizer (Tables 1-5)
    python benchmarks/tune_lr.py --table5 [--seeds 3] [--jobs 2]   # a rate for each Table 5 row
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


def table5_rows() -> dict[str, dict]:
    """Each Table 5 row's config fields (its optimizer and activation), without a learning rate."""
    from digitcmp.experiments import get_experiment

    table5 = get_experiment("table5")
    return {row.name: {**table5.base, **row.overrides} for row in table5.rows}


def _validation_error(job: tuple[str, dict, float, int]) -> tuple[str, float, float]:

    from digitcmp.perf import configure_process
    from digitcmp.train import train_run

    configure_process(1)  # one thread, the training allocator settings
    row, fields, lr, seed = job
    config = RunConfig(**fields, lr=lr, validation=True)
    result, _, _ = train_run(config, seed, track_errors=False)
    return row, lr, result["test_error"]  # the held-out validation pairs here


def mean_errors(rows: dict[str, dict], seeds: int, jobs: int) -> dict[tuple[str, float], float]:
    """Mean validation error % of every (row, rate of the row's optimizer) over seeds 100, 101, ..."""
    work = [(row, f, lr, 100 + s) for row, f in rows.items() for lr in GRID[f["optimizer"]] for s in range(seeds)]
    errors: dict[tuple[str, float], list[float]] = {}
    with ProcessPoolExecutor(jobs) as pool:
        for row, lr, err in pool.map(_validation_error, work):
            errors.setdefault((row, lr), []).append(100 * err)
    return {key: statistics.mean(values) for key, values in errors.items()}


def choose_shared(seeds: int, jobs: int) -> None:
    """One rate per optimizer: the lowest mean over the study's four architectures."""
    rows = {f"{row}/{opt}": {**fields, "optimizer": opt} for opt in GRID for row, fields in ROWS.items()}
    means = mean_errors(rows, seeds, jobs)
    print(f"mean validation error % over {seeds} seeds (800 train / 200 validation pairs, 25 epochs)")
    best = {}
    for opt, lrs in GRID.items():
        print(f"\n{opt:<6}" + "".join(f"{row:>18}" for row in ROWS) + f"{'mean':>10}")
        scores = {}
        for lr in lrs:
            cells = [means[(f"{row}/{opt}", lr)] for row in ROWS]
            scores[lr] = statistics.mean(cells)
            print(f"{lr:<6g}" + "".join(f"{c:>18.2f}" for c in cells) + f"{scores[lr]:>10.2f}")
        best[opt] = min(scores, key=scores.get)
    print("\nchosen (lowest mean over the four rows):", best)
    print(json.dumps({"chosen_lr": best, "seeds": seeds}))


def choose_per_row(seeds: int, jobs: int) -> None:
    """A rate for each Table 5 row on its own: the lowest mean validation error of the row."""
    rows = table5_rows()
    means = mean_errors(rows, seeds, jobs)
    print(f"mean validation error % over {seeds} seeds (800 train / 200 validation pairs, 25 epochs)")
    chosen = {}
    for opt, lrs in GRID.items():
        names = [name for name, fields in rows.items() if fields["optimizer"] == opt]
        print(f"\n{opt:<8}" + "".join(f"{name:>16}" for name in names))
        for lr in lrs:
            print(f"{lr:<8g}" + "".join(f"{means[(name, lr)]:>16.2f}" for name in names))
        for name in names:
            chosen[name] = min(lrs, key=lambda lr: means[(name, lr)])
    print("\nchosen (lowest mean of each row):", chosen)
    print(json.dumps({"chosen_lr_per_row": chosen, "seeds": seeds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--table5", action="store_true", help="choose a rate for each Table 5 row on its own")
    args = parser.parse_args()
    (choose_per_row if args.table5 else choose_shared)(args.seeds, args.jobs)


if __name__ == "__main__":
    main()
