"""Choose the best recipe's ingredients on validation splits of the training pairs.

Every run uses RunConfig(validation=True): it trains on 800 of the seed's 1000 training pairs and
is scored on the other 200 (never on test pairs). Seeds 100-104 are kept apart from the seeds
0-9 of the reported results. Candidates: the ablation's cumulative rows, then variations of the
full recipe one knob at a time.

    python benchmarks/tune_best.py [--seeds 5] [--jobs N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

from digitcmp.config import RunConfig
from digitcmp.experiments import STUDY_BEST

# The candidate ingredients, in the order they were tried (cumulative), and the full candidate
# recipe they add up to; then variations of that candidate, one knob at a time.
STAGES = (
    ("study best: SIAM + AUX + Adam + Leaky", {}),
    ("+ exact comparison", dict(comparison="exact")),
    ("+ recombined pairs", dict(recombine=True)),
    ("+ augmentation", dict(augment="affine")),
    ("+ longer cosine schedule", dict(epochs=100, lr_schedule="cosine")),
    ("+ deeper tower", dict(tower="deep")),
    ("+ test-time augmentation", dict(tta=8)),
)
RECIPE = {**STUDY_BEST, **{k: v for _, change in STAGES for k, v in change.items()}}
VARIATIONS = {
    "recipe, 50 epochs": dict(epochs=50),
    "recipe, 200 epochs": dict(epochs=200),
    "recipe, lr 0.003": dict(lr=0.003),
    "recipe, lr 0.03": dict(lr=0.03),
    "recipe, lenet tower": dict(tower="lenet"),
    "recipe, channels 64/128": dict(channels=(64, 128)),
    "recipe, dropout 0.3": dict(dropout=0.3),
    "recipe, label smoothing 0.1": dict(label_smoothing=0.1),
    "recipe, aux weight 0.5": dict(aux_weight=0.5),
    "recipe, no recombination": dict(recombine=False),
    "recipe, batch 50": dict(batch_size=50),
}


def candidates() -> dict[str, dict]:
    rows, fields = {}, dict(STUDY_BEST)
    for name, change in STAGES:
        fields = {**fields, **change}
        rows[f"ablation: {name}"] = fields
    rows.update({name: {**RECIPE, **change} for name, change in VARIATIONS.items()})
    return rows


def _run(job: tuple[str, dict, int, str]) -> tuple[str, int, float, float]:

    from digitcmp.perf import configure_process
    from digitcmp.train import train_run

    configure_process(1)  # one thread, the training allocator settings
    name, fields, seed, device = job
    result, _, _ = train_run(RunConfig(**fields, validation=True), seed, device=device, track_errors=False)
    return name, seed, result["test_error"], result["train_seconds"]  # test_error = validation error here


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="*", default=None, help="candidate names to run (default: all)")
    args = parser.parse_args()
    rows = {k: v for k, v in candidates().items() if not args.only or k in args.only}
    jobs = [(name, fields, 100 + s, args.device) for name, fields in rows.items() for s in range(args.seeds)]
    started = time.perf_counter()
    errors: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        for name, _, err, sec in pool.map(_run, jobs):
            errors.setdefault(name, []).append(100 * err)
            seconds.setdefault(name, []).append(sec)
    print(f"validation error % over {args.seeds} seeds (800 train / 200 validation pairs each), device {args.device}")
    print(f"{'candidate':<52}{'mean':>8}{'sd':>8}{'train s':>10}")
    for name in rows:
        e = errors[name]
        print(
            f"{name:<52}{statistics.mean(e):>8.2f}{statistics.stdev(e) if len(e) > 1 else 0:>8.2f}"
            f"{statistics.mean(seconds[name]):>10.1f}"
        )
    print(f"wall time {time.perf_counter() - started:.0f} s")
    print(json.dumps({"seeds": args.seeds, "device": args.device, "errors": errors}))


if __name__ == "__main__":
    main()
