"""The report, rebuilt from the results store alone: tables (Markdown, CSV, LaTeX), figures, claims.

Nothing here trains or types in a number of ours: every figure is computed from stored runs. The
study's published values come from the experiment declarations and are shown beside ours.
"""

from __future__ import annotations

import csv
import math
import platform
import textwrap
from pathlib import Path

import numpy as np

from . import __version__
from .experiments import get_experiment
from .stats import RowStats, collect, evaluate_claim
from .store import Store

# Why our numbers may differ from the study's, by "experiment/row" or, for every experiment, by row
# name; shown next to each disagreement.
EXPLANATIONS = {
    "FNN + BN": (
        "The study's FNN + BN error is far below its own CNN (Table 2) and Siamese nets (Tables 4-5), "
        "which no other row supports: a fully connected net sees the pair as 392 unrelated pixels and "
        "must learn the comparison from 1000 examples. Most likely the study reported a training error "
        "or a mis-scaled number for this row; ours is in line with its other FNN row and its CNN."
    ),
    "table5/SGD + Sigmoid": (
        "One learning rate per optimizer, chosen on validation over ReLU nets, is too high for the sigmoid net "
        "under plain SGD: its training loss blows up in the first epochs and stays far above the other rows' "
        "(Fig. 1). The same row at a rate chosen for it alone on validation is in 'Table 5, each row at its own "
        "learning rate' (reproduce --all)."
    ),
    "FNN": (
        "Without batch normalization, raw-scale inputs and SGD make the FNN sensitive to the learning "
        "rate; the study's FNN barely beat chance, ours uses standardized inputs and a tuned rate."
    ),
    "best recipe": (
        "Not a reproduction: the study column holds the study's best row (Table 5, Adam + Leaky) for comparison."
    ),
}
DEFAULT_EXPLANATION = (
    "Differences in the learning rate (ours chosen on a validation split), input standardization, "
    "initialization and the per-epoch shuffling of batches; the study does not give all of these."
)


def _explanation(experiment: str, row: str) -> str:
    return EXPLANATIONS.get(f"{experiment}/{row}", EXPLANATIONS.get(row, DEFAULT_EXPLANATION))


def _fmt(x: float, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


TABLE_HEADER = [
    "row",
    "error % (mean)",
    "sigma %",
    "95 % CI",
    "train time s",
    "n",
    "study error %",
    "study sigma %",
    "study time s",
]


def table_cells(rows: list[RowStats]) -> list[list[str]]:
    cells = []
    for r in rows:
        low, high = r.ci95
        pub = r.published
        cells.append(
            [
                r.name,
                _fmt(r.mean),
                _fmt(r.sd),
                f"[{_fmt(low)}, {_fmt(high)}]",
                _fmt(float(r.seconds.mean()) if r.n else math.nan),
                str(r.n),
                _fmt(pub.error) if pub else "–",
                _fmt(pub.sigma) if pub else "–",
                _fmt(pub.seconds) if pub else "–",
            ]
        )
    return cells


def _markdown_table(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines)


def _latex_table(title: str, header: list[str], cells: list[list[str]]) -> str:
    esc = lambda s: s.replace("%", r"\%").replace("_", r"\_").replace("–", "--")  # noqa: E731
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        f"\\caption{{{esc(title)}}}",
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(esc(h) for h in header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(esc(c) for c in row) + r" \\" for row in cells]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _curves(store: Store, rows: list[RowStats], key: str) -> dict[str, np.ndarray]:
    """Per-row arrays [n_seeds, epochs] of a per-epoch quantity."""
    out = {}
    for r in rows:
        per_run = store.epochs(r.run_ids)
        series = [[e[key] for e in per_run[i]] for i in r.run_ids]
        series = [s for s in series if s and None not in s]  # runs that recorded this quantity
        if series:
            out[r.name] = np.array([s for s in series if len(s) == len(series[0])], dtype=float)
    return out


def _plot_curves(curves: dict[str, np.ndarray], ylabel: str, title: str, path: Path, log: bool, formats) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, values in curves.items():
        epochs = np.arange(1, values.shape[1] + 1)
        mean = values.mean(0)
        (line,) = ax.plot(epochs, mean, label=name)
        ax.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.15, linewidth=0)
    if log:
        ax.set_yscale("log")
    return _finish_figure(fig, ax, title, "epoch", ylabel, path, formats)


def _finish_figure(fig, ax, title: str, xlabel: str, ylabel: str, path: Path, formats) -> list[Path]:
    """Labels, grid and legend, then the figure saved in every format; returns the files."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=10)  # long experiment titles wrap, not clip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        fig.savefig(target)
        written.append(target)
    plt.close(fig)
    return written


def _plot_learning_curves(rows: list[RowStats], path: Path, formats) -> list[Path]:
    """Test error against training pairs (log x), one line per model, band = min-max over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models: dict[str, list[tuple[int, RowStats]]] = {}
    for r in rows:
        model, pairs = r.name.rsplit(" @ ", 1)
        models.setdefault(model, []).append((int(pairs), r))
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for model, points in models.items():
        points = sorted((n, r) for n, r in points if r.n)
        if not points:
            continue
        sizes = [n for n, _ in points]
        (line,) = ax.plot(sizes, [r.mean for _, r in points], marker="o", label=model)
        ax.fill_between(
            sizes,
            [r.errors.min() for _, r in points],
            [r.errors.max() for _, r in points],
            color=line.get_color(),
            alpha=0.15,
            linewidth=0,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    sizes = sorted({int(r.name.rsplit(" @ ", 1)[1]) for r in rows})
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    title = "Learning curves (mean over seeds, band = min-max)"
    return _finish_figure(fig, ax, title, "training pairs", "test error % (1000 test pairs)", path, formats)


def write_report(
    store: Store,
    out_dir: str | Path,
    md_name: str = "report.md",
    tables: bool = True,
    formats: tuple[str, ...] = ("png", "svg"),
) -> Path:
    """Write the report of the store's last sweep under out_dir; returns the Markdown file's path."""
    import torch

    sweep = store.last_sweep()
    if sweep is None:
        raise ValueError(f"results store {store.path} holds no sweep yet: run `digitcmp reproduce` first")
    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    if tables:
        (out / "tables").mkdir(exist_ok=True)
    experiments = [get_experiment(name) for name in sweep["experiments"]]
    all_rows: dict[str, RowStats] = {}
    per_experiment = {}
    for exp in experiments:
        rows = collect(store, exp, sweep["seeds"], sweep["epochs"])
        per_experiment[exp.name] = rows
        all_rows.update({f"{exp.name}/{r.name}": r for r in rows})
    # Claims may refer to rows of experiments outside this sweep: include them when stored.
    for exp in experiments:
        for claim in exp.claims:
            for ref in (claim.better, claim.worse):
                if ref not in all_rows:
                    other = get_experiment(ref.split("/", 1)[0])
                    all_rows.update(
                        {f"{other.name}/{r.name}": r for r in collect(store, other, sweep["seeds"], sweep["epochs"])}
                    )

    first_run = next((r for rows in per_experiment.values() for r in rows if r.run_ids), None)
    prov = store.runs(first_run.config_hash, 1 << 30)[0] if first_run else {}
    commits = store.commits(sorted({i for rows in per_experiment.values() for r in rows for i in r.run_ids}))
    if len(commits) > 1:  # a store resumed across commits: say which runs came from which
        commit_text = "git commits " + ", ".join(f"{c or 'unknown'} ({n} runs)" for c, n in commits)
    else:
        commit_text = f"git commit {(commits[0][0] if commits else None) or 'unknown'}"
    total_runs = len({(r.config_hash, s) for rows in per_experiment.values() for r in rows for s in r.seeds})
    epochs_text = (
        f"{sweep['epochs']} epochs (set for the whole sweep)"
        if sweep["epochs"]
        else "the study's 25 epochs unless a row's config says otherwise (our recipe: 100)"
    )
    md = [
        "# digitcmp: the study reproduced",
        "",
        f"Produced by `{sweep['command']}` (started {sweep['started_at']}); report written by digitcmp "
        f"{__version__}, torch {torch.__version__}, Python {platform.python_version()}, on "
        f"{prov.get('host', platform.node())}, device {prov.get('device', '?')}, {commit_text}.",
        "",
        "Protocol: each seed draws its own 1000 test pairs and its training pairs (1000 unless a row says "
        f"otherwise), batch 100, {epochs_text}, "
        f"seeds 0 to n - 1 (n in each table); {total_runs} distinct runs in these tables (a config that appears in "
        "several tables is trained once). Error = test error in %, sigma = "
        "standard deviation over seeds, 95 % CI = Student-t interval of the mean, train time = seconds of "
        "training per run (evaluation excluded). Study columns: the published values.",
        "",
    ]
    for exp in experiments:
        rows = per_experiment[exp.name]
        cells = table_cells(rows)
        md += [f"## {exp.title}", "", exp.description, "", _markdown_table(TABLE_HEADER, cells), ""]
        if tables:
            with open(out / "tables" / f"{exp.name}.csv", "w", newline="") as fh:
                csv.writer(fh).writerows([TABLE_HEADER, *cells])
            (out / "tables" / f"{exp.name}.tex").write_text(
                _latex_table(f"{exp.title}: {exp.description}", TABLE_HEADER, cells)
            )
        if exp.curve and any(r.n for r in rows):
            written = _plot_learning_curves(rows, fig_dir / f"{exp.name}", formats)
            md += [f"![{exp.title}](figures/{written[0].name})", ""]
        if exp.loss_figure:
            curves = _curves(store, rows, "loss")
            if curves:
                stem = "fig1_training_loss" if exp.name == "table5" else f"{exp.name}_training_loss"
                title = f"{exp.title}: training loss (mean over seeds, band = min-max)"
                written = _plot_curves(curves, "training loss", title, fig_dir / stem, True, formats)
                md += [f"![{title}](figures/{written[0].name})", ""]
    study_rows = [r for exp in experiments if exp.name.startswith("table") for r in per_experiment[exp.name]]
    curves = _curves(store, [r for r in study_rows if r.experiment != "table5"], "test_error")
    if curves:
        title = "Tables 1-4: test error per epoch (mean over seeds, band = min-max)"
        written = _plot_curves(
            {k: 100 * v for k, v in curves.items()}, "test error %", title, fig_dir / "test_error_per_epoch", False, formats
        )
        md += [f"![{title}](figures/{written[0].name})", ""]

    md += [
        "## Claims",
        "",
        "Each conclusion as a one-sided paired test across seeds (same seed = same pairs in both rows): "
        "Wilcoxon signed-rank (the verdict, at 5 %) and paired t-test. Difference = mean over seeds of "
        "(error of the better row - error of the worse row), in % points.",
        "",
        _markdown_table(
            ["claim", "better", "worse", "n", "difference", "p (Wilcoxon)", "p (paired t)", "verdict"],
            [
                [
                    c.claim.text,
                    c.claim.better,
                    c.claim.worse,
                    str(c.n),
                    _fmt(c.mean_diff),
                    _fmt(c.p_wilcoxon, 4),
                    _fmt(c.p_ttest, 4),
                    c.verdict,
                ]
                for exp in experiments
                for c in (evaluate_claim(cl, all_rows) for cl in exp.claims)
            ],
        ),
        "",
    ]

    md += ["## Where we disagree with the study", ""]
    disagreements = []
    for exp in experiments:
        for r in per_experiment[exp.name]:
            low, high = r.ci95
            if r.published is None or math.isnan(low) or low <= r.published.error <= high:
                continue
            direction = "lower" if r.mean < r.published.error else "higher"
            disagreements.append(
                f"- **{exp.title}, {r.name}**: ours {_fmt(r.mean)} % (95 % CI [{_fmt(low)}, {_fmt(high)}]) is {direction} "
                f"than the study's {_fmt(r.published.error)} %. {_explanation(exp.name, r.name)}"
            )
    md += disagreements or ["Every published error lies inside our 95 % confidence interval."]
    md += ["", "Training times are not comparable across machines: ours are per run on the device above."]
    path = out / md_name
    path.write_text("\n".join(md) + "\n")
    return path
