"""The choice of `digitcmp tune best` (read from the tuning storage, exact values) against the recipe
it searched around (`--preset hand_picked`) on the *test* pairs, after the choice was made on
validation pairs alone (the `best` experiment reports the same comparison with `--preset best`,
the choice to 4 significant digits): both recipes trained on the study's seeds 0-9 (1000 training
pairs, 1000 test pairs each, the study's protocol), runs alternating between the two recipes, and
a paired test over the seeds (study.stats.paired_test: Wilcoxon signed-rank and t-test).

    python benchmarks/choice_vs_best.py [--storage results/tuning.sqlite] [--seeds 10] [--jobs 2]

Prints one line per run as it finishes, a table, and last one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics

from digitcmp.core.config import RunConfig
from digitcmp.core.perf import configure_process
from digitcmp.run.executors import Execution
from digitcmp.study.experiments import PRESETS
from digitcmp.study.stats import paired_test
from digitcmp.tune.search import chosen_trial, import_optuna, open_storage, storage_url, stored_rescores, trial_values
from digitcmp.tune.spaces import get_space


def train_one(name: str, config: dict, seed: int) -> tuple[str, int, float]:
    from digitcmp.core.train import train_run

    result, _, _ = train_run(RunConfig(**config), seed, track_errors=False)
    return name, seed, result.test_error


def choice_of_best_search(storage: str) -> tuple[int, dict]:
    """The trial `digitcmp tune best` chose (the finalist with the lowest re-scored error) and its fields."""
    optuna = import_optuna()
    space = get_space("best")
    study = optuna.load_study(study_name="best", storage=open_storage(storage_url(storage)))
    rescores = stored_rescores(study)
    if not rescores:
        raise SystemExit("the study `best` has no re-scored finalists yet: run `digitcmp tune best` to the end first")
    choice = chosen_trial(study, {n: r["value"] for n, r in rescores.items()})
    return choice.number, trial_values(space, "", choice)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="results/tuning.sqlite")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    configure_process(1)
    number, values = choice_of_best_search(args.storage)
    base = PRESETS["hand_picked"]
    recipes = {"preset hand_picked": dict(base), f"tune best, trial {number}": {**base, **values}}
    names = list(recipes)
    calls = [(name, recipes[name], seed) for seed in range(args.seeds) for name in names]  # alternating
    errors: dict[str, dict[int, float]] = {name: {} for name in names}
    for name, seed, error in Execution(jobs=args.jobs).executor().results(train_one, calls):
        errors[name][seed] = error
        print(f"{name} seed {seed}: {100 * error:.2f} %", flush=True)
    seeds = sorted(errors[names[0]])
    a = [100 * errors[names[1]][s] for s in seeds]
    b = [100 * errors[names[0]][s] for s in seeds]
    test = paired_test(a, b)
    print(f"\ntest error over seeds {seeds[0]}-{seeds[-1]} (1000 test pairs each):")
    for name, per_seed in ((names[0], b), (names[1], a)):
        print(f"  {name:<24} mean {statistics.mean(per_seed):.2f} %  sd {statistics.stdev(per_seed):.2f}  ({recipes[name]})")
    print(
        f"  choice minus best: {test.mean_diff:+.2f} points; Wilcoxon one-sided p = {test.p_wilcoxon_less:.4f}, "
        f"paired t one-sided p = {test.p_t_less:.4f}, two-sided p = {test.p_t_two_sided:.4f}"
    )
    print(
        json.dumps(
            {
                "trial": number,
                "values": values,
                "seeds": seeds,
                "best": b,
                "choice": a,
                "mean_diff": test.mean_diff,
                "p_wilcoxon_less": test.p_wilcoxon_less,
                "p_t_less": test.p_t_less,
            },
            default=str,
        )
    )


if __name__ == "__main__":
    main()
