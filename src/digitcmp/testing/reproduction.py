"""The reproduction check: a slice of `digitcmp reproduce` on a fresh store, compared with a
committed reference of per-seed test errors keyed by instruction set, and with docs/results.md's
own rows where the instruction set is the one the docs were computed on.

The same code, config and seed give the same numbers to the last digit only under the same
instruction sets (perf.instruction_set), so the reference holds the slice under each set it was
measured on: this machine's own, and the baseline every x86-64 CPU can be held to
(BASELINE_ENV: ATen's default kernels, oneDNN capped at SSE4.1), which makes the check exact on any
machine. Regenerate the reference (it runs the slice natively and under the baseline):

    python -m digitcmp.testing.reproduction --write tests/reference/reproduction.json
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

# The slice: experiment -> seeds. Table 1 whole (the FNN rows: ATen's kernels) at the docs' 10
# seeds, so that its rows are compared with docs/results.md; Table 4's CNN (oneDNN's convolutions
# too) at 2 seeds, which is enough to tell two instruction sets apart.
SLICE = {"table1": 10, "table4": 2}
BASELINE_ENV = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}


def reproduce_slice(folder: Path, env: dict[str, str] | None = None) -> tuple[str, dict[str, list[float]]]:
    """Run the slice with `digitcmp reproduce` into a new store in folder (env: variables added to
    this process's); returns (the runs' instruction set, test errors by 'experiment/row', by seed)."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "slice.sqlite"
    for experiment, seeds in SLICE.items():
        command = [sys.executable, "-m", "digitcmp", "reproduce", "--experiment", experiment, "--seeds", str(seeds)]
        command += ["--db", str(db), "--out", str(folder / "out"), "--no-progress"]
        subprocess.run(command, check=True, capture_output=True, timeout=1800, env={**os.environ, **(env or {})})
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT experiment, row_name, seed, test_error, isa FROM runs ORDER BY seed").fetchall()
    finally:
        conn.close()
    isas = {isa for *_, isa in rows}
    if len(isas) != 1:
        raise RuntimeError(f"the slice's runs were computed under more than one instruction set: {sorted(isas)}")
    errors: dict[str, list[float]] = {}
    for experiment, row, _, error, _ in rows:
        errors.setdefault(f"{experiment}/{row}", []).append(error)
    return isas.pop(), errors


def docs_rows(text: str, title: str) -> dict[str, list[str]]:
    """The rows of one table of docs/results.md (a '## title' section): row name -> its cells."""
    rows: dict[str, list[str]] = {}
    section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] not in ("row", "---"):
            rows[cells[0]] = cells[1:]
    return rows


DOCS = Path(__file__).resolve().parents[3] / "docs" / "results.md"  # (in a source checkout)
TIME_COLUMN = 3  # 'train time s': the one column of docs/results.md's tables that is not a result


def table_rows(out: Path, experiment: str) -> dict[str, list[str]]:
    """The rows of a report's table (its CSV), row name -> cells, as docs_rows gives them."""
    import csv

    with open(out / "tables" / f"{experiment}.csv", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        return {cells[0]: cells[1:] for cells in reader}


def results_without_time(rows: dict[str, list[str]]) -> dict[str, list[str]]:
    """Table rows without their time column (which varies run to run)."""
    return {name: cells[:TIME_COLUMN] + cells[TIME_COLUMN + 1 :] for name, cells in rows.items()}


def matches_docs(out: Path, docs: Path = DOCS) -> bool:
    """Whether the slice's Table 1 (a report in out) equals docs/results.md's, every result cell."""
    return results_without_time(table_rows(out, "table1")) == results_without_time(docs_rows(docs.read_text(), "Table 1"))


def main(argv: list[str] | None = None) -> None:
    """Regenerate the reproduction check's reference for this machine's instruction set."""
    parser = argparse.ArgumentParser(description="regenerate the reproduction check's reference")
    parser.add_argument("--write", type=Path, required=True, help="the reference JSON to write")
    parser.add_argument("--work", type=Path, default=Path("reproduction-slice"), help="a folder for the stores")
    args = parser.parse_args(argv)
    native_isa, native = reproduce_slice(args.work / "native")
    baseline_isa, baseline = reproduce_slice(args.work / "baseline", BASELINE_ENV)
    # The docs' instruction set is the one under which their rows come out again (kept from the
    # reference before when this machine's do not).
    before = json.loads(args.write.read_text()) if args.write.exists() else {}
    docs_isa = native_isa if matches_docs(args.work / "native" / "out") else before.get("docs_isa")
    reference = {
        "about": "test errors (fractions) by seed of the slice, under each instruction set; "
        "python -m digitcmp.testing.reproduction --write PATH regenerates it",
        "slice": SLICE,
        "docs_isa": docs_isa,
        "baseline_env": BASELINE_ENV,
        # Other machines' entries stay: the same code gives them there.
        "errors": {**before.get("errors", {}), native_isa: native, baseline_isa: baseline},
    }
    args.write.parent.mkdir(parents=True, exist_ok=True)
    args.write.write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n")
    print(f"{args.write}: {native_isa} and {baseline_isa}; docs/results.md's rows under {docs_isa}")


if __name__ == "__main__":
    main()
