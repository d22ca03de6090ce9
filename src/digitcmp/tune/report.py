"""The report of the tuning storage (`digitcmp tune --report`): for each study of each space, its
trials, the best values (and, for a grid, the table the choice is made from, with the values the
code uses now), Optuna's optimization-history and parameter-importance plots. Everything on it is
read from the storage; nothing is pasted."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

from ..common.destinations import check_folder, replace_file, write_text
from ..core.config import RunConfig
from ..study.report import fmt, markdown_table
from ..study.stats import paired_test
from .search import (
    chosen_trial,
    import_optuna,
    open_storage,
    same_values,
    stored_rescores,
    trial_of,
    trial_values,
    value_text,
)
from .spaces import FINALIST_SEED_BASE, SPACES, VALIDATION_SEED_BASE, SearchSpace


def _pct(value) -> str:
    return fmt(None if value is None else 100 * value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return markdown_table(header, rows).splitlines()


def _seconds(trial) -> float:
    return sum(run["seconds"] for run in trial.user_attrs.get("runs", []))


def standard_error(runs: list[dict]) -> float | None:
    """The standard error of a trial's value from its runs: the spread of its per-seed errors
    (averaged over rows) over the square root of the seeds. It holds both the noise of the
    validation pairs and that of training."""
    per_seed = {}
    for r in runs:
        per_seed.setdefault(r["seed"], []).append(r["error"])
    means = [sum(v) / len(v) for v in per_seed.values()]
    if len(means) < 2:
        return None
    mean = sum(means) / len(means)
    return math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1) / len(means))


def _paired(better: list[dict], worse: list[dict]) -> str:
    """How much better one trial's runs are than another's on the same (row, seed): the mean
    difference and a two-sided paired t-test, so that a choice within the noise reads as one."""
    a = {(r["row"], r["seed"]): r["error"] for r in better}
    b = {(r["row"], r["seed"]): r["error"] for r in worse}
    keys = sorted(set(a) & set(b))
    if len(keys) < 2:
        return ""
    test = paired_test([100 * a[k] for k in keys], [100 * b[k] for k in keys])
    p = test.p_t_two_sided
    verdict = "within the noise" if not p < 0.05 else "significant"
    return (
        f" Chosen minus in use: {test.mean_diff:+.2f} points over the same {len(keys)} runs "
        f"(paired t-test p = {p:.2f}: {verdict})."
    )


def _values_text(space: SearchSpace, key: str, trial) -> str:
    return ", ".join(f"{n} = {value_text(trial.params[n])}" for n in space.ranges(key) if n in trial.params)


def _finalists_section(space: SearchSpace, key: str, study) -> list[str]:
    """The finalists: search value and re-scored value on fresh seeds, the choice made from the
    re-scored ones, and the choice against the values in use on those same fresh runs."""
    rescores = stored_rescores(study)
    if not rescores:
        return ["No finalist is re-scored yet (the choice is made when `digitcmp tune` finishes a study)."]
    choice = chosen_trial(study, {n: r["value"] for n, r in rescores.items()})
    in_use = space.in_use.get(key)
    finalists = [study.trials[n] for n in sorted(rescores)]
    current = getattr(trial_of(space, key, finalists, in_use), "number", None)
    start = getattr(trial_of(space, key, finalists, space.start_values(key)), "number", None)
    seeds = sorted({r["seed"] for v in rescores.values() for r in v["runs"]})
    cells = []
    for number in sorted(rescores, key=lambda n: (rescores[n]["value"], n)):
        t = study.trials[number]
        se = standard_error(rescores[number]["runs"])
        cells.append(
            [
                f"{number}"
                + _tags((("chosen", number == choice.number), ("start", number == start), ("in use", number == current))),
                _pct(t.value),
                _pct(rescores[number]["value"]),
                _pct(se),
            ]
            + [value_text(t.params[n]) for n in space.ranges(key)]
        )
    lines = [
        f"Finalists re-scored on fresh seeds {seeds[0]}-{seeds[-1]} (the {space.finalists} best trials of the search"
        + (", its start" if space.start_values(key) is not None else "")
        + " and the values in use); the choice is the lowest re-scored error:",
        "",
    ]
    lines += _table(["trial", "search %", "re-scored %", "± se %"] + list(space.ranges(key)), cells)
    lines += ["", f"Chosen: trial {choice.number}, **{_values_text(space, key, choice)}**."]
    if in_use is not None:
        same = current == choice.number
        line = f"The code uses {', '.join(f'{n} = {value_text(v)}' for n, v in in_use.items())}: "
        line += "the same." if same else "**not** the same."
        if not same and current is not None:
            line += _paired(rescores[choice.number]["runs"], rescores[current]["runs"])
        lines.append(line)
    return lines


def _grid_section(space: SearchSpace, key: str, complete: list) -> list[str]:
    """A grid study: each grid point's mean error per row and overall, with its standard error."""
    grid = space.grid(key)
    names = list(grid)
    first = {}  # one trial per grid point: the first complete one (parallel workers may have run a point twice)
    for t in sorted(complete, key=lambda t: t.number):
        first.setdefault(tuple(t.params[n] for n in names), t)
    points = sorted(first.values(), key=lambda t: tuple(grid[n].index(t.params[n]) for n in names))
    rows_named = [row for row in space.rows if row]
    header = names + [f"{row} %" for row in rows_named] + ["mean %", "± se %"]
    cells = []
    for t in points:
        per_row = {}
        for run in t.user_attrs.get("runs", []):
            per_row.setdefault(run["row"], []).append(run["error"])
        cells.append(
            [value_text(t.params[n]) for n in names]
            + [_pct(sum(per_row[r]) / len(per_row[r])) if r in per_row else "–" for r in rows_named]
            + [_pct(t.value), _pct(standard_error(t.user_attrs.get("runs", [])))]
        )
    lines = _table(header, cells)
    size = math.prod(len(v) for v in grid.values())
    if len(points) < size:
        lines += ["", f"Only {len(points)} of the grid's {size} points are stored: the choice may change."]
    return lines


def _tags(marks: tuple[tuple[str, bool], ...]) -> str:
    """' (a, b)' for the marks that hold, '' for none: how a trial's number is tagged in the tables."""
    tags = [tag for tag, holds in marks if holds]
    return f" ({', '.join(tags)})" if tags else ""


def _trial_tags(space: SearchSpace, key: str, trial) -> str:
    """Whether the trial was the search's start (its first, enqueued trial) and whether it holds the
    values the code uses now, as _tags."""
    in_use = bool(trial.params) and same_values(trial_values(space, key, trial), space.in_use.get(key))
    return _tags((("start", bool(trial.user_attrs.get("enqueued"))), ("in use", in_use)))


def _tpe_section(space: SearchSpace, key: str, study, complete: list, figures: Path, docs: bool) -> list[str]:
    """A TPE study: every trial, best first; the best parameters; the plots."""
    optuna = import_optuna()
    names = list(space.ranges(key))
    trials = study.get_trials(deepcopy=False)
    done = optuna.trial.TrialState.COMPLETE
    ordered = sorted(trials, key=lambda t: (t.state != done, t.value if t.state == done else 0, t.number))
    complete_state = optuna.trial.TrialState.COMPLETE
    cells = [  # a pruned trial shows the share of training it reached
        [
            str(t.number) + _trial_tags(space, key, t),
            t.state.name.lower()
            + (f" at {t.last_step} %" if t.state == optuna.trial.TrialState.PRUNED and t.last_step is not None else ""),
            _pct(t.value) if t.state == complete_state else "–",
            _pct(standard_error(t.user_attrs.get("runs", []))) if t.state == complete_state else "–",
            f"{_seconds(t):.0f}" if t.user_attrs.get("runs") else "–",
        ]
        + [value_text(t.params.get(n, "")) for n in names]
        for t in ordered
    ]
    lines = _table(["trial", "state", "validation %", "± se %", "train s"] + names, cells)
    stem = "tuning_" + "".join(c if c.isalnum() else "_" for c in space.study_name(key))
    plots = []
    if len(complete) >= 2:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as optuna_plots

        ax = optuna_plots.plot_optimization_history(study)
        plots.append((f"{stem}_history.png", "Optimization history", ax))
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        try:
            ax = optuna_plots.plot_param_importances(study, evaluator=evaluator)
            plots.append((f"{stem}_importance.png", "Parameter importances (PED-ANOVA)", ax))
        except (ValueError, RuntimeError, ZeroDivisionError):  # too few distinct trials to rank parameters
            pass
        for name, _title, ax in plots:
            fig = ax.figure
            fig.set_size_inches(7, 4)
            fig.tight_layout()
            replace_file(figures / name, partial(fig.savefig, dpi=110), "report figure")
            plt.close(fig)
    lines.append("")
    for name, title, _ in plots:
        lines += [f"![{title}](figures/{name})", ""]
    return lines


def write_tuning_report(url: str, out_dir: str | Path, spaces: list[str] | None = None, docs: bool = False) -> Path:
    """tuning.md (and figures/tuning_*.png) under out_dir for the stored studies of the given
    spaces (default: every declared space with a study in the storage); returns its path."""
    optuna = import_optuna()
    storage = open_storage(url)
    stored = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    out = check_folder(out_dir, "report folder")
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    command = "digitcmp tune --report" + (" --docs" if docs else "")
    validation_pairs = RunConfig().validation_pairs
    md = [
        "# How hyperparameters were chosen",
        "",
        f"Produced by `{command}` from the tuning storage, which `digitcmp tune SPACE` fills. Every",
        "error here is a **validation** error: each run trains on its seed's 1000 training pairs (the study's",
        f"protocol) and is scored on {validation_pairs} pairs of other MNIST training digits, a fixed draw per seed;",
        "no test pair is drawn for a choice (tested).",
        f"Search seeds are {VALIDATION_SEED_BASE} and up; finalists are re-scored on fresh seeds",
        f"{FINALIST_SEED_BASE} and up; both are apart from the seeds 0-9 of the reported results.",
        "A trial's value is the mean over its rows and seeds (with the config's test-time views); its standard",
        "error (± se) is the spread of its per-seed errors over the square root of the seeds: the noise of the",
        "validation pairs and of training together. A TPE search prunes on the error of a trial's first run on",
        "the first 5000 validation pairs, every 5 % of its training.",
        "",
    ]
    chosen = [SPACES[name] for name in (spaces or list(SPACES))]
    found = False
    for space in chosen:
        keys = [k for k in space.studies if space.study_name(k) in stored]
        if not keys:
            continue
        found = True
        md += [f"## Space `{space.name}`", "", space.description + ".", ""]
        for key in keys:
            study = optuna.load_study(study_name=space.study_name(key), storage=storage)
            all_trials = study.get_trials(deepcopy=False)
            complete = [t for t in all_trials if t.state == optuna.trial.TrialState.COMPLETE]
            states = {}
            for t in all_trials:
                states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
            seeds = study.user_attrs.get("seeds")
            hours = sum(_seconds(t) for t in all_trials) / 3600
            counted = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
            title = f"### Study `{space.study_name(key)}`" if key else "### Trials"
            md += [
                title,
                "",
                f"{len(all_trials)} trials ({counted}), {seeds} validation seeds each, "
                f"{hours:.2f} h of training in all. Sampler: {space.sampler}.",
                "",
            ]
            if not complete:
                md += ["No trial is complete yet.", ""]
                continue
            if space.is_grid:
                md += _grid_section(space, key, complete) + [""]
            else:
                md += _tpe_section(space, key, study, complete, figures, docs)
            ses = [standard_error(t.user_attrs.get("runs", [])) for t in complete]
            ses = sorted(se for se in ses if se is not None)
            if ses:
                # The validation pairs' share of it: a binomial error rate over all the trial's pairs.
                value = sorted(t.value for t in complete)[len(complete) // 2]
                pairs = validation_pairs * (seeds or 1) * len(space.rows)
                md += [
                    f"Standard error of a complete trial's value: median {_pct(ses[len(ses) // 2])} % (of {len(ses)}); "
                    f"the validation pairs alone would give {_pct(math.sqrt(value * (1 - value) / pairs))} % at the "
                    f"median value ({_pct(value)} %, {pairs} pairs).",
                    "",
                ]
            md += _finalists_section(space, key, study) + [""]
    if not found:
        raise ValueError("the tuning storage holds no study of the spaces asked for; run `digitcmp tune SPACE` first")
    path = out / "tuning.md"
    write_text(path, "\n".join(md) + "\n", "tuning report")
    return path
