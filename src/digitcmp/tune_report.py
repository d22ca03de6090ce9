"""The report of the tuning storage (`digitcmp tune --report`): for each study of each space, its
trials, the best values (and, for a grid, the table the choice is made from, with the values the
code uses now), Optuna's optimization-history and parameter-importance plots. Everything on it is
read from the storage; nothing is pasted."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

from .destinations import check_folder, replace_file, write_text
from .report import _fmt, markdown_table
from .spaces import SPACES, VALIDATION_SEED_BASE, SearchSpace
from .tune import _import_optuna, best_trial, open_storage


def _pct(value) -> str:
    return _fmt(None if value is None else 100 * value)


def _value_text(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return markdown_table(header, rows).splitlines()


def _seconds(trial) -> float:
    return sum(run["seconds"] for run in trial.user_attrs.get("runs", []))


def _paired(better, worse) -> str:
    """How much better one trial is than another on the same runs (row, seed): the mean difference
    and a two-sided paired t-test, so that a choice within the noise reads as one."""
    from scipy import stats

    a = {(r["row"], r["seed"]): r["error"] for r in better.user_attrs.get("runs", [])}
    b = {(r["row"], r["seed"]): r["error"] for r in worse.user_attrs.get("runs", [])}
    keys = sorted(set(a) & set(b))
    if len(keys) < 2:
        return ""
    diff = 100 * (sum(a[k] for k in keys) - sum(b[k] for k in keys)) / len(keys)
    p = stats.ttest_rel([a[k] for k in keys], [b[k] for k in keys]).pvalue
    verdict = "within the noise" if not p < 0.05 else "significant"
    return f" Chosen minus in use: {diff:+.2f} points over the same {len(keys)} runs (paired t-test p = {p:.2f}: {verdict})."


def _grid_section(space: SearchSpace, key: str, complete: list) -> list[str]:
    """A grid study: each grid point's mean error per row and overall; the choice (lowest mean,
    ties to the first point of the grid) against the value the code uses now."""
    grid = space.grid(key)
    names = list(grid)
    first = {}  # one trial per grid point: the first complete one (parallel workers may have run a point twice)
    for t in sorted(complete, key=lambda t: t.number):
        first.setdefault(tuple(t.params[n] for n in names), t)
    points = sorted(first.values(), key=lambda t: tuple(grid[n].index(t.params[n]) for n in names))
    rows_named = [row for row in space.rows if row]
    header = names + [f"{row} %" for row in rows_named] + ["mean %"]
    cells = []
    for t in points:
        per_row = {}
        for run in t.user_attrs.get("runs", []):
            per_row.setdefault(run["row"], []).append(run["error"])
        cells.append(
            [_value_text(t.params[n]) for n in names]
            + [_pct(sum(per_row[r]) / len(per_row[r])) if r in per_row else "–" for r in rows_named]
            + [_pct(t.value)]
        )
    chosen = min(points, key=lambda t: t.value)  # min keeps the first of equal values: the earlier grid point
    lines = _table(header, cells)
    size = math.prod(len(v) for v in grid.values())
    in_use = space.in_use.get(key)
    choice = ", ".join(f"{n} = {_value_text(chosen.params[n])}" for n in names)
    lines += ["", f"Chosen (lowest mean, ties to the first grid point): **{choice}**."]
    if len(points) < size:
        lines.append(f"Only {len(points)} of the grid's {size} points are stored: the choice may change.")
    if in_use is not None:
        same = all(in_use.get(n) == space.ranges(key)[n].decode(chosen.params[n]) for n in names)
        used = ", ".join(f"{n} = {_value_text(v)}" for n, v in in_use.items())
        line = f"The code uses {used}: {'the same' if same else '**not** the same'}."
        in_use_trial = next(
            (t for t in points if all(space.ranges(key)[n].decode(t.params[n]) == in_use.get(n) for n in names)), None
        )
        if not same and in_use_trial is not None:
            line += _paired(chosen, in_use_trial)
        lines.append(line)
    return lines


def _tpe_section(space: SearchSpace, key: str, study, complete: list, figures: Path, docs: bool) -> list[str]:
    """A TPE study: every trial, best first; the best parameters; the plots."""
    optuna = _import_optuna()
    names = list(space.ranges(key))
    trials = study.get_trials(deepcopy=False)
    ordered = sorted(trials, key=lambda t: (t.value is None, t.value if t.value is not None else 0, t.number))
    cells = [  # a pruned trial's value is its first run's last reported error, in parentheses
        [
            str(t.number) + (" (in use)" if t.user_attrs.get("enqueued") else ""),
            t.state.name.lower(),
            _pct(t.value) if t.state == optuna.trial.TrialState.COMPLETE or t.value is None else f"({_pct(t.value)})",
            f"{_seconds(t):.0f}" if t.user_attrs.get("runs") else "–",
        ]
        + [_value_text(t.params.get(n, "")) for n in names]
        for t in ordered
    ]
    lines = _table(["trial", "state", "validation %", "train s"] + names, cells)
    if complete:
        best = best_trial(study)
        baseline = next((t for t in complete if t.user_attrs.get("enqueued")), None)
        against = _paired(best, baseline) if baseline is not None and baseline is not best else ""
        lines += ["", f"Best: trial {best.number}, {_pct(best.value)} % mean validation error.{against}"]
        in_use = space.in_use.get(key, {})
        lines += [""] + _table(
            ["setting", "best trial", "in use now"],
            [[n, _value_text(best.params[n]), _value_text(in_use.get(n, "–"))] for n in names],
        )
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
    optuna = _import_optuna()
    storage = open_storage(url)
    stored = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    out = check_folder(out_dir, "report folder")
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    command = "digitcmp tune --report" + (" --docs" if docs else "")
    md = [
        "# How hyperparameters were chosen",
        "",
        f"Produced by `{command}` from the tuning storage, which `digitcmp tune SPACE` fills. Every",
        "error here is a **validation** error: each run trains on the first 800 of its seed's 1000",
        "training pairs and is scored on the other 200; no test pair is drawn for a choice (tested).",
        f"Validation seeds are {VALIDATION_SEED_BASE} and up, apart from the seeds 0-9 of the reported results.",
        "A trial's value is the mean over its rows and seeds (with the config's test-time views).",
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
            if space.sampler == "grid":
                md += _grid_section(space, key, complete) + [""]
            else:
                md += _tpe_section(space, key, study, complete, figures, docs)
    if not found:
        raise ValueError("the tuning storage holds no study of the spaces asked for; run `digitcmp tune SPACE` first")
    path = out / "tuning.md"
    write_text(path, "\n".join(md) + "\n", "tuning report")
    return path
