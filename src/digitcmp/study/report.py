"""The report, rebuilt from the results store alone: tables (Markdown, CSV, LaTeX), figures, claims.

Nothing here trains or types in a number of ours: every figure is computed from stored runs. The
study's published values come from the experiment declarations and are shown beside ours.
"""

from __future__ import annotations

import csv
import io
import math
import platform
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..common.destinations import check_folder, replace_file, write_text
from ..common.version import __version__
from ..core.config import RunConfig
from .experiments import FIGURES, STUDY_PROTOCOL, Experiment, Figure, get_experiment
from .stats import RowStats, adjust_family, collect, evaluate_claim
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


def md_text(text: object) -> str:
    """A text from the store (a command, a host name, a commit) as literal Markdown: every character
    that Markdown or HTML would read as markup is escaped, so a stored text shows as it is."""
    text = " ".join(str(text).split())
    text = "".join(f"\\{c}" if c in "\\`*_[]!|" else c for c in text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md_code(text: object) -> str:
    """A text from the store as a Markdown code span, fenced by more backticks than it holds in a row
    (inside a code span nothing is markup; Markdown escapes < and & there itself)."""
    text = " ".join(str(text).split())
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def fmt(x: float, digits: int = 2) -> str:
    """A number with `digits` decimals, or a dash for a missing one."""
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
    """A table's cells: each row's name, n, mean, spread, interval and the published figures."""
    cells = []
    for r in rows:
        low, high = r.ci95
        pub = r.published
        cells.append(
            [
                r.name,
                fmt(r.mean),
                fmt(r.sd),
                f"[{fmt(low)}, {fmt(high)}]",
                fmt(float(r.seconds.mean()) if r.n else math.nan),
                str(r.n),
                fmt(pub.error) if pub else "–",
                fmt(pub.sigma) if pub else "–",
                fmt(pub.seconds) if pub else "–",
            ]
        )
    return cells


def markdown_table(header: list[str], cells: list[list[str]]) -> str:
    """A Markdown table of the header and cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines)


def _latex_table(title: str, header: list[str], cells: list[list[str]]) -> str:
    esc = lambda s: s.replace("%", r"\%").replace("_", r"\_").replace("–", "--")
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


@dataclass
class Series:
    """One line of a figure: a row of an experiment, and its values over seeds."""

    experiment: str
    row: str
    label: str
    x: np.ndarray  # [T] epochs, or training pairs
    values: np.ndarray  # [n, T] one line per seed that has the data (for 'pairs': [n, 1] per point)


@dataclass
class FigureData:
    """What a figure draws, and the rows it should draw but cannot (said under it in the report)."""

    figure: Figure
    series: list[Series]
    gaps: list[str]


def _per_epoch_series(store: Store, figure: Figure, rows: list[RowStats], labels: dict) -> FigureData:
    """One series per row: the per-epoch quantity of every stored run that recorded it."""
    series, gaps = [], []
    scale = 100.0 if figure.quantity == "test_error" else 1.0
    what = "per-epoch test errors" if figure.quantity == "test_error" else "per-epoch losses"
    for r in rows:
        if not r.n:
            gaps.append(f"{r.experiment}/{r.name}: no stored runs")
            continue
        per_run = store.epochs(r.run_ids)
        recorded = [[e[figure.quantity] for e in per_run[i]] for i in r.run_ids]
        recorded = [v for v in recorded if v and None not in v]
        length = max((len(v) for v in recorded), default=0)
        recorded = [v for v in recorded if len(v) == length]
        if len(recorded) < r.n:
            gaps.append(f"{r.experiment}/{r.name}: {what} stored for {len(recorded)} of its {r.n} runs")
        if recorded:
            values = scale * np.array(recorded, dtype=float)
            series.append(Series(r.experiment, r.name, labels[(r.experiment, r.name)], np.arange(1, length + 1), values))
    return FigureData(figure, series, gaps)


def _pairs_series(figure: Figure, rows: list[RowStats]) -> FigureData:
    """One series per model of 'model @ pairs' rows: test error against training pairs."""
    models: dict[tuple[str, str], list[tuple[int, RowStats]]] = {}
    gaps = []
    for r in rows:
        model, pairs = r.name.rsplit(" @ ", 1)
        if not r.n:
            gaps.append(f"{r.experiment}/{r.name}: no stored runs")
            continue
        models.setdefault((r.experiment, model), []).append((int(pairs), r))
    series = []
    for (experiment, model), points in models.items():
        points.sort(key=lambda point: point[0])
        # values[i, j]: seed i at size j; sizes may have different numbers of seeds, so pad with NaN
        n = max(r.n for _, r in points)
        values = np.full((n, len(points)), np.nan)
        for j, (_, r) in enumerate(points):
            values[: r.n, j] = r.errors
        series.append(Series(experiment, model, model, np.array([p for p, _ in points]), values))
    return FigureData(figure, series, gaps)


def figure_data(store: Store, figure: Figure, rows: list[RowStats]) -> FigureData:
    """The data of a figure from the rows of the experiments that declare it (keyed by experiment
    and row: rows of different experiments never merge, and are labelled apart if names repeat)."""
    names = [r.name for r in rows]
    labels = {
        (r.experiment, r.name): r.name if names.count(r.name) == 1 else f"{get_experiment(r.experiment).title}: {r.name}"
        for r in rows
    }
    if figure.quantity == "pairs":
        return _pairs_series(figure, rows)
    return _per_epoch_series(store, figure, rows, labels)


def write_figure_csv(data: FigureData, path: Path) -> Path:
    """figures/NAME.csv: experiment, row, x (epoch or pairs), mean, min, max, n (seeds with a value)."""
    x_name = "pairs" if data.figure.quantity == "pairs" else "epoch"
    fh = io.StringIO(newline="")
    writer = csv.writer(fh)
    writer.writerow(["experiment", "row", x_name, "mean", "min", "max", "n"])
    for s in data.series:
        for j, x in enumerate(s.x):
            column = s.values[:, j]
            column = column[~np.isnan(column)]
            writer.writerow(
                [s.experiment, s.row, int(x), repr(float(column.mean())), repr(float(column.min())),
                 repr(float(column.max())), len(column)]
            )  # fmt: skip
    write_text(path, fh.getvalue(), "report file")
    return path


def plot_figure(data: FigureData, path: Path, formats: Sequence[str]) -> list[Path]:
    """The figure: each series' mean over seeds, with a min-max band; saved in every format."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = data.figure
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    marker = "o" if figure.quantity == "pairs" else None
    for s in data.series:
        (line,) = ax.plot(s.x, np.nanmean(s.values, 0), marker=marker, label=s.label)
        ax.fill_between(s.x, np.nanmin(s.values, 0), np.nanmax(s.values, 0), color=line.get_color(), alpha=0.15, linewidth=0)
    if figure.log:
        ax.set_yscale("log")
    xlabel = "epoch"
    if figure.quantity == "pairs":
        xlabel = "training pairs"
        ax.set_xscale("log")
        sizes = sorted({int(x) for s in data.series for x in s.x})
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(figure.ylabel)
    ax.set_title("\n".join(textwrap.wrap(figure.title, 70)), fontsize=10)  # long titles wrap, not clip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        replace_file(target, fig.savefig, "report figure")
        written.append(target)
    plt.close(fig)
    return written


# ---------------------------------------------------------------- the report, section by section


@dataclass
class ReportInputs:
    """The stored sweep the report describes, and the statistics of its rows."""

    sweep: dict
    experiments: list[Experiment]
    rows: dict[str, list[RowStats]]  # by experiment name
    claim_rows: dict[str, RowStats]  # by "experiment/row", claims' rows outside the sweep included

    def configs(self) -> list[RunConfig]:
        """Every config of the report's experiments, under the sweep's protocol."""
        protocol = {} if self.sweep["epochs"] is None else {"epochs": self.sweep["epochs"]}
        return [exp.config(row, **protocol) for exp in self.experiments for row in exp.rows]


def gather(store: Store) -> ReportInputs:
    """The last sweep of the store and every row statistic the report needs."""
    sweep = store.last_sweep()
    if sweep is None:
        raise ValueError(f"results store {store.path} holds no sweep yet: run `digitcmp reproduce` first")
    experiments = [get_experiment(name) for name in sweep["experiments"]]
    rows = {exp.name: collect(store, exp, sweep["seeds"], sweep["epochs"]) for exp in experiments}
    claim_rows = {f"{r.experiment}/{r.name}": r for exp_rows in rows.values() for r in exp_rows}
    for exp in experiments:  # claims may refer to rows of experiments outside this sweep: include them when stored
        for claim in exp.claims:
            for ref in (claim.better, claim.worse):
                if ref not in claim_rows:
                    other = get_experiment(ref.split("/", 1)[0])
                    rows_other = collect(store, other, sweep["seeds"], sweep["epochs"])
                    claim_rows.update({f"{other.name}/{r.name}": r for r in rows_other})
    return ReportInputs(sweep, experiments, rows, claim_rows)


def _protocol_text(inputs: ReportInputs) -> str:
    """Batch sizes and epochs as the sweep's configs have them (the study's, and where rows differ)."""
    configs = inputs.configs()
    batches = ", ".join(str(b) for b in sorted({c.batch_size for c in configs}))
    usual = inputs.sweep["epochs"] or STUDY_PROTOCOL["epochs"]
    longer: dict[int, list[str]] = {}
    for exp in inputs.experiments:
        for row in exp.rows:
            epochs = exp.config(row).epochs if inputs.sweep["epochs"] is None else inputs.sweep["epochs"]
            if epochs != usual and exp.title not in longer.get(epochs, []):
                longer.setdefault(epochs, []).append(exp.title)
    epochs_text = f"{usual} epochs" + (" (set for the whole sweep)" if inputs.sweep["epochs"] else "")
    if longer:
        epochs_text += " except some rows of " + "; ".join(f"{', '.join(t)}: {e}" for e, t in sorted(longer.items()))
    return f"batch {batches}, {epochs_text}"


def _header(store: Store, inputs: ReportInputs, report_command: str | None) -> list[str]:
    import torch

    run_ids = sorted({i for rows in inputs.rows.values() for r in rows for i in r.run_ids})
    first = next((r for rows in inputs.rows.values() for r in rows if r.run_ids), None)
    prov = store.runs(first.config_hash, 1 << 30)[0] if first else {}
    commits = store.commits(run_ids) if run_ids else []
    if len(commits) > 1:  # a store resumed across commits: say which runs came from which
        commit_text = "git commits " + ", ".join(f"{md_text(c or 'unknown')} ({n} runs)" for c, n in commits)
    else:
        commit_text = f"git commit {md_text((commits[0][0] if commits else None) or 'unknown')}"
    total_runs = len({(r.config_hash, s) for rows in inputs.rows.values() for r in rows for s in r.seeds})
    hardware = "; ".join(
        f"{md_text(cpu or 'CPU not recorded')} ({md_text(isa or 'instruction sets not recorded')}): {n} runs"
        for cpu, isa, n in (store.hardware(run_ids) if run_ids else [])
    )
    engines = "; ".join(
        f"{md_text(name)} " + ", ".join(f"{family} ({n} runs)" for family, n in store.engines(ids).items())
        for name, ids in ((name, sorted({i for r in rows for i in r.run_ids})) for name, rows in inputs.rows.items())
        if ids
    )
    then = f", then {md_code(report_command)}" if report_command else ""
    return [
        "# digitcmp: the study reproduced",
        "",
        f"Produced by {md_code(inputs.sweep['command'])}{then} (sweep started {md_text(inputs.sweep['started_at'])}); "
        f"report written by digitcmp {__version__}, torch {torch.__version__}, Python {platform.python_version()}, on "
        f"{md_text(prov.get('host', platform.node()))}, device {md_text(prov.get('device', '?'))}, {commit_text}.",
        "",
        f"Hardware of these numbers: {hardware or 'no runs'}. Runs reproduce to the last digit on the same "
        'instruction sets; elsewhere they move within the seeds\' spread (README, "Results on other hardware").',
        "",
        f"Engines (the batched and the single engine differ in the last digits, so a row never mixes them): "
        f"{engines or 'no runs'}.",
        "",
        "Protocol: each seed draws its own 1000 test pairs and its training pairs (1000 unless a row says "
        f"otherwise), {_protocol_text(inputs)}, "
        f"seeds 0 to n - 1 (n in each table); {total_runs} distinct runs in these tables (a config that appears in "
        "several tables is trained once). Error = test error in %, sigma = "
        "standard deviation over seeds, 95 % CI = Student-t interval of the mean, clipped to [0, 100], "
        "train time = seconds of training per run (evaluation excluded). Study columns: the published values.",
        "",
    ]


def _table_section(exp: Experiment, rows: list[RowStats], out: Path, tables: bool) -> list[str]:
    cells = table_cells(rows)
    if tables:
        fh = io.StringIO(newline="")
        csv.writer(fh).writerows([TABLE_HEADER, *cells])
        write_text(out / "tables" / f"{exp.name}.csv", fh.getvalue(), "report table")
        write_text(out / "tables" / f"{exp.name}.tex", _latex_table(f"{exp.title}: {exp.description}", TABLE_HEADER, cells))
    return [f"## {exp.title}", "", exp.description, "", markdown_table(TABLE_HEADER, cells), ""]


def _figure_section(store: Store, figure: Figure, rows: list[RowStats], fig_dir: Path, formats) -> list[str]:
    data = figure_data(store, figure, rows)
    lines = []
    if data.series:
        written = plot_figure(data, fig_dir / figure.name, formats)
        write_figure_csv(data, fig_dir / f"{figure.name}.csv")
        lines += [f"![{figure.title}](figures/{written[0].name})", "", f"Data: `figures/{figure.name}.csv`.", ""]
    else:
        lines += [f"*{figure.title}*: nothing to draw.", ""]
    if data.gaps:
        lines += [f"Missing from this figure: {'; '.join(data.gaps)}.", ""]
    return lines


def _claims_section(inputs: ReportInputs) -> list[str]:
    results = [
        result
        for exp in inputs.experiments
        for result in adjust_family([evaluate_claim(claim, inputs.claim_rows) for claim in exp.claims], exp.title)
    ]
    cells = [
        [c.family, c.claim.text, c.claim.better, c.claim.worse, str(c.n), fmt(c.mean_diff), fmt(c.p_wilcoxon, 4),
         fmt(c.p_holm, 4), fmt(c.p_ttest, 4), c.verdict + ("" if c.verdict == c.verdict_unadjusted else
         f" (unadjusted: {c.verdict_unadjusted})")]
        for c in results
    ]  # fmt: skip
    return [
        "## Claims",
        "",
        "Each conclusion as a one-sided paired test across seeds (same seed = same pairs in both rows): "
        "Wilcoxon signed-rank and paired t-test. Difference = mean over seeds of (error of the better row - "
        "error of the worse row), in % points. Family = the table the claims belong to: within each, the "
        "Wilcoxon p-values of every claim in both directions are Holm-adjusted, and the verdict (at 5 %) "
        "rests on the adjusted value; a verdict that the adjustment changed says what it was before.",
        "",
        markdown_table(
            ["family", "claim", "better", "worse", "n", "difference", "p (Wilcoxon)", "p (Holm)", "p (paired t)", "verdict"],
            cells,
        ),
        "",
    ]


def _disagreements_section(inputs: ReportInputs) -> list[str]:
    lines = []
    for exp in inputs.experiments:
        for r in inputs.rows[exp.name]:
            low, high = r.ci95
            if r.published is None or math.isnan(low) or low <= r.published.error <= high:
                continue
            direction = "lower" if r.mean < r.published.error else "higher"
            lines.append(
                f"- **{exp.title}, {r.name}**: ours {fmt(r.mean)} % (95 % CI [{fmt(low)}, {fmt(high)}]) is {direction} "
                f"than the study's {fmt(r.published.error)} %. {_explanation(exp.name, r.name)}"
            )
    return [
        "## Where we disagree with the study",
        "",
        *(lines or ["Every published error lies inside our 95 % confidence interval."]),
        "",
        "Training times are not comparable across machines: ours are per run on the device above.",
    ]


def write_report(
    store: Store,
    out_dir: str | Path,
    md_name: str = "report.md",
    tables: bool = True,
    formats: tuple[str, ...] = ("png", "svg"),
    report_command: str | None = None,
) -> Path:
    """Write the report of the store's last sweep under out_dir; returns the Markdown file's path.

    Each experiment's table, then each figure after the last experiment of the sweep that
    declares it, drawn from the rows of all of those experiments, with its data as CSV."""
    out = check_folder(out_dir, "report folder")
    inputs = gather(store)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    if tables:
        (out / "tables").mkdir(exist_ok=True)
    last_declaring = {name: exp.name for exp in inputs.experiments for name in exp.figures}
    md = _header(store, inputs, report_command)
    for exp in inputs.experiments:
        md += _table_section(exp, inputs.rows[exp.name], out, tables)
        for name in FIGURES:
            if last_declaring.get(name) == exp.name:
                rows = [r for e in inputs.experiments if name in e.figures for r in inputs.rows[e.name]]
                md += _figure_section(store, FIGURES[name], rows, fig_dir, formats)
    md += _claims_section(inputs)
    md += _disagreements_section(inputs)
    path = out / md_name
    write_text(path, "\n".join(md) + "\n", "report")
    return path
