"""Which ensemble of 3 is worth its cost, chosen on validation pairs alone.

For each validation seed, trains a pool of candidate members on the seed's 1000 training pairs
(the study's protocol, validation mode: no test pair is drawn) and keeps each member's answers on
the seed's 10000 validation pairs. Then scores every member alone and every ensemble of 3 of the
pool (the members' probabilities averaged, as models.Ensemble answers), mean over seeds with the
spread of the per-seed errors. The pool holds the best recipe from three member seeds (the
ensemble `--preset best --ensemble 3` trains) and variants of it that differ in tower, width,
augmentation or learning rate, the diversity an ensemble may need.

    python benchmarks/ensemble_diversity.py [--seeds 300 301 302] [--jobs 2] [--out ANSWERS.json]
        [--answers ANSWERS.json] [--markdown docs/ensembles.md]

--out keeps every member's answers; --answers scores answers kept so, without training; --markdown
writes the tables as docs/ensembles.md holds them.

Seeds 300 and up are apart from the search (100+), its finalists (200+) and the reported
results (0-9).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

from digitcmp.study.experiments import PRESETS

# name -> (overrides on PRESETS["best"], member index: which member seed of the run seed)
POOL: dict[str, tuple[dict, int]] = {
    "best#0": ({}, 0),
    "best#1": ({}, 1),
    "best#2": ({}, 2),
    "split towers": ({"arch": "split_cnn"}, 1),
    "wider (64/128)": ({"channels": (64, 128)}, 1),
    "strong augmentation": ({"augment": "affine_strong"}, 1),
    # Trial 26 of the first `digitcmp tune best` run, one of its finalists (0.92 % re-scored).
    "lower lr, less dropout": ({"lr": 0.01465, "dropout": 0.113, "label_smoothing": 0.05361, "aux_weight": 2.226}, 1),
}


def member_answers(name: str, seed: int) -> tuple[str, int, list[float], list[int], float]:
    """Train one pool member on seed's pairs; its P(first <= second) on the validation pairs."""
    import torch

    from digitcmp.core.batches import prepare_data
    from digitcmp.core.config import RunConfig
    from digitcmp.core.inference import AnswerSpec, SingleModel, answer
    from digitcmp.core.seeds import derive_seed
    from digitcmp.core.train import train_member

    torch.set_num_threads(1)
    overrides, member = POOL[name]
    config = RunConfig(**{**PRESETS["best"], **overrides, "validation": True})
    data = prepare_data(config, seed)
    started = time.perf_counter()
    _, model = train_member(config, data, derive_seed(seed, "member", member), track_errors=False)
    spec = AnswerSpec(data.mean, data.std, config.tta, seed)  # the views an Ensemble of the run answers with
    p_le = answer(SingleModel(model), data.eval_x[None], [spec]).p_le[0]
    return name, seed, p_le.tolist(), data.eval_y.tolist(), time.perf_counter() - started


def error(p_le: list[float], truth: list[int]) -> float:
    """The share of pairs answered wrong (the package's one error rate, core.inference.error_rates)."""
    import torch

    from digitcmp.core.inference import error_rates

    return error_rates(torch.tensor(p_le, dtype=torch.float64), torch.tensor(truth)).item()


def train_pool(seeds: list[int], jobs: int) -> tuple[dict, dict, dict]:
    """Every member of the pool on every seed: (answers[(name, seed)], truth[seed], seconds[name])."""
    answers: dict[tuple[str, int], list[float]] = {}
    truth: dict[int, list[int]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in POOL}
    calls = [(name, seed) for seed in seeds for name in POOL]
    with ProcessPoolExecutor(jobs) as pool:
        for name, seed, p_le, y, took in pool.map(member_answers, *zip(*calls)):
            answers[name, seed], truth[seed] = p_le, y
            seconds[name].append(took)
            print(f"trained {name} on seed {seed} in {took:.0f} s: {100 * error(p_le, y):.2f} %", flush=True)
    return answers, truth, seconds


SAME_RECIPE = ("best#0", "best#1", "best#2")  # what `--preset best --ensemble 3` trains
MARKDOWN_HEAD = """# Ensembles of 3, chosen on validation

Produced by `python benchmarks/ensemble_diversity.py --markdown docs/ensembles.md` (about 20 minutes
on 2 cores; `--out FILE` keeps every member's answers, `--answers FILE` scores them again without
training). A pool of candidate members is trained per validation seed: the best recipe
(`--preset best`) from three member seeds, which is the ensemble `--ensemble 3` trains, and
variants of it that an ensemble might gain diversity from (split towers, wider towers, stronger
augmentation, and the rate, dropout and auxiliary weight of trial 26 of the first `digitcmp tune
best` run, one of its finalists). Every ensemble of 3 of the pool is scored by
averaging its members' probabilities, as `digitcmp` ensembles answer.

"""


def tables(seeds: list[int], answers: dict, truth: dict) -> str:
    """Markdown: what the ensembles gain, then each member alone and every ensemble of 3 of the
    pool, lowest mean error first."""
    from scipy import stats

    def ensemble_errors(trio: tuple[str, ...]) -> list[float]:
        return [error([sum(ps) / len(trio) for ps in zip(*(answers[n, s] for n in trio))], truth[s]) for s in seeds]

    head = "| {} | validation error %, mean ± sd | per seed % |\n|---|---|---|"
    alone = {name: [error(answers[name, s], truth[s]) for s in seeds] for name in POOL}
    scored = sorted((statistics.mean(ensemble_errors(t)), t) for t in itertools.combinations(POOL, 3))
    best_trio = scored[0][1]
    same, lowest = ensemble_errors(SAME_RECIPE), ensemble_errors(best_trio)
    members = [statistics.mean(alone[n]) for n in SAME_RECIPE]
    test = stats.ttest_rel(lowest, same) if best_trio != SAME_RECIPE else None
    summary_lines = [
        f"- A model of the best recipe alone: {100 * statistics.mean(members):.3f} % (the mean of its three member seeds).",
        f"- Their ensemble, what `--preset best --ensemble 3` trains: {100 * statistics.mean(same):.3f} % "
        f"({100 * (statistics.mean(same) / statistics.mean(members) - 1):+.0f} % relative).",
        f"- The lowest of the {len(scored)} ensembles of 3 on these seeds: {' + '.join(best_trio)}, "
        f"{100 * statistics.mean(lowest):.3f} %"
        + (
            f"; against the same-recipe ensemble, seed by seed: "
            f"{', '.join(f'{100 * (a - b):+.2f}' for a, b in zip(lowest, same))} points (paired t-test p = "
            f"{test.pvalue:.2f}; chosen as the lowest of {len(scored)}, so its margin is optimistic)."
            if test is not None
            else "."
        ),
    ]
    pairs = len(truth[seeds[0]])
    return "\n".join(
        [
            f"Validation seeds {', '.join(map(str, seeds))}: each seed's 1000 training pairs (the study's protocol), "
            f"scored on {pairs} validation pairs of other MNIST training digits; no test pair is drawn.",
            "",
            *summary_lines,
            "",
            head.format("member"),
            *(f"| {name} | {summary(errs)} |" for name, errs in alone.items()),
            "",
            head.format("ensemble of 3 (probabilities averaged)"),
            *(f"| {' + '.join(trio)} | {summary(ensemble_errors(trio))} |" for _, trio in scored),
            "",
        ]
    )


def summary(errors: list[float]) -> str:
    spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
    return f"{100 * statistics.mean(errors):.3f} ± {100 * spread:.3f} | " + ", ".join(f"{100 * e:.2f}" for e in errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[300, 301, 302])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default=None, help="also write every member's answers here (JSON)")
    parser.add_argument("--answers", default=None, help="score the answers an earlier --out kept instead of training")
    parser.add_argument("--markdown", default=None, help="write the tables here (docs/ensembles.md)")
    args = parser.parse_args()

    if args.answers:
        with open(args.answers) as f:
            kept = json.load(f)
        seeds = kept["seeds"]
        answers = {(key.rsplit("@", 1)[0], int(key.rsplit("@", 1)[1])): p for key, p in kept["answers"].items()}
        truth = {int(seed): y for seed, y in kept["truth"].items()}
    else:
        seeds = args.seeds
        answers, truth, seconds = train_pool(seeds, args.jobs)
        medians = ", ".join(f"{n} {statistics.median(t):.0f}" for n, t in seconds.items())
        print(f"training seconds per member (median): {medians}")
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"seeds": seeds, "answers": {f"{n}@{s}": p for (n, s), p in answers.items()}, "truth": truth}, f)
    text = tables(seeds, answers, truth)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(MARKDOWN_HEAD + text)


if __name__ == "__main__":
    main()
