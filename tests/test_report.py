from html import escape as html_escape

import pytest

from digitcmp.core.records import RunResult
from digitcmp.study.experiments import STUDY_EXPERIMENTS
from digitcmp.study.plan import expand
from digitcmp.study.report import write_report
from digitcmp.study.store import Store, provenance
from digitcmp.testing.extras import require
from digitcmp.testing.stores import synthetic_store


def test_report_has_every_section_and_file(tmp_path):
    store = synthetic_store(tmp_path / "r.sqlite")
    path = write_report(store, tmp_path / "out")
    text = path.read_text()
    for heading in [
        "## Table 1",
        "## Table 2",
        "## Table 3",
        "## Table 4",
        "## Table 5",
        "## Factorial",
        "## Claims",
        "## Where we disagree with the study",
    ]:
        assert heading in text
    for row in ["FNN + BN", "SIAM + CNN + BN + AUX", "Adam + Leaky", "shared + aux 0"]:
        assert f"| {row} |" in text
    assert "44.70" in text and "8.07" in text  # published values beside ours
    for name in STUDY_EXPERIMENTS:
        assert (tmp_path / "out" / "tables" / f"{name}.csv").read_text().count("\n") >= 2
        assert "\\toprule" in (tmp_path / "out" / "tables" / f"{name}.tex").read_text()
    for fig in ["fig1_training_loss.png", "fig1_training_loss.svg", "test_error_per_epoch.png"]:
        assert (tmp_path / "out" / "figures" / fig).stat().st_size > 1000
    assert "digitcmp reproduce (test)" in text and "distinct runs" in text


def test_report_command_reads_the_store_alone(tmp_path, capsys):
    from digitcmp.cli import main

    synthetic_store(tmp_path / "r.sqlite").close()
    assert main(["report", "--db", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "report.md").exists()
    assert main(["report", "--db", str(tmp_path / "missing.sqlite")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_leaves_the_store_unchanged_and_refuses_foreign_files(tmp_path, capsys):
    import hashlib
    import sqlite3

    from digitcmp.cli import main

    digest = lambda p: hashlib.md5(p.read_bytes()).hexdigest()
    store = synthetic_store(tmp_path / "r.sqlite")
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file
    store.close()
    before = digest(tmp_path / "r.sqlite")
    assert main(["report", "--db", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "o")]) == 0
    assert digest(tmp_path / "r.sqlite") == before

    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    before = digest(foreign)
    assert main(["report", "--db", str(foreign), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "not a digitcmp results store" in err and err.count("\n") == 1
    assert digest(foreign) == before
    with sqlite3.connect(foreign) as conn:
        assert [name for (name,) in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]
    conn.close()

    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all, just some bytes" * 100)
    assert main(["report", "--db", str(garbage), "--out", str(tmp_path / "o3")]) == 2
    assert "cannot use results store" in capsys.readouterr().err


def test_disagreement_explanations_can_be_specific_to_an_experiment():
    from digitcmp.study.report import DEFAULT_EXPLANATION, _explanation

    assert "blows up" in _explanation("table5", "SGD + Sigmoid")
    assert _explanation("table5_tuned", "SGD + Sigmoid") == DEFAULT_EXPLANATION  # its rate is its own
    assert "barely beat chance" in _explanation("table1", "FNN")  # row-wide explanations still apply


def test_report_header_names_every_commit_the_runs_came_from(tmp_path):
    store = synthetic_store(tmp_path / "r.sqlite", seeds=2, epochs=2)
    text = write_report(store, tmp_path / "one").read_text()
    assert "git commits" not in text
    store.conn.execute("UPDATE runs SET git_commit = 'feedc0de' WHERE id % 2 = 0")
    total = store.count()
    text = write_report(store, tmp_path / "two").read_text()
    header = text.splitlines()[2]
    assert "git commits" in header and f"feedc0de ({total // 2} runs)" in header


def _csv_rows(path):
    import csv

    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_tables_1_4_figure_holds_exactly_their_rows_with_its_data(tmp_path):
    from digitcmp.study.experiments import EXPERIMENTS

    names = [*STUDY_EXPERIMENTS, "table5_tuned"]
    store = Store(tmp_path / "r.sqlite")
    store.add_sweep(names, 2, 2, "digitcmp reproduce (test)")
    for p in expand(names, 2, 2):  # every run records its curve, Table 5's too: the figure must still leave them out
        epochs = [
            {
                "epoch": e + 1,
                "loss": 1.0,
                "loss_main": 0.5,
                "loss_aux": 0.5,
                "train_error": 0.1,
                "test_error": 0.2 + p.seed / 10,
            }
            for e in range(2)
        ]
        result = {"seed": p.seed, "test_error": 0.2, "train_error": 0.1, "train_seconds": 1.0, "epochs": epochs}
        result = RunResult.from_dict({**result, "input_mean": 33.0, "input_std": 70.0})
        store.add_run(p.experiment, p.row, p.config, result, provenance("cpu", "single"))
    write_report(store, tmp_path / "out")
    rows = _csv_rows(tmp_path / "out" / "figures" / "test_error_per_epoch.csv")
    expected = {(name, r.name) for name in ("table1", "table2", "table3", "table4") for r in EXPERIMENTS[name].rows}
    assert {(r["experiment"], r["row"]) for r in rows} == expected
    assert len(rows) == 2 * len(expected)  # two epochs per row
    first = rows[0]
    assert first.keys() == {"experiment", "row", "epoch", "mean", "min", "max", "n"}
    assert [float(first[k]) for k in ("mean", "min", "max")] == pytest.approx([25.0, 20.0, 30.0]) and first["n"] == "2"
    # every figure gets its data beside it; Table 5's loss figure holds Table 5's rows alone
    for png in (tmp_path / "out" / "figures").glob("*.png"):
        assert png.with_suffix(".csv").is_file(), png
    fig1 = _csv_rows(tmp_path / "out" / "figures" / "fig1_training_loss.csv")
    assert {r["experiment"] for r in fig1} == {"table5"}
    tuned = _csv_rows(tmp_path / "out" / "figures" / "table5_tuned_training_loss.csv")
    assert {r["experiment"] for r in tuned} == {"table5_tuned"}


def test_a_row_without_curves_is_named_under_the_figure(tmp_path):
    store = synthetic_store(tmp_path / "r.sqlite", seeds=2, epochs=2)
    store.conn.execute(
        "UPDATE epochs SET test_error = NULL WHERE run_id IN (SELECT id FROM runs WHERE experiment = 'table4')"
    )
    text = write_report(store, tmp_path / "out").read_text()
    assert "Missing from this figure: table4/SIAM + CNN + BN + AUX: per-epoch test errors stored for 0 of its 2 runs" in text
    rows = _csv_rows(tmp_path / "out" / "figures" / "test_error_per_epoch.csv")
    assert "table4" not in {r["experiment"] for r in rows}


@pytest.mark.slow  # sweeps, training or processes in subprocesses
def test_a_sweep_that_draws_curves_retrains_stored_runs_without_them(tmp_path, reproduce_argv):
    """Table 5 stores the Siamese aux runs without per-epoch test errors; Table 4's figure needs
    them: reproducing Table 4 afterwards retrains those runs, in place, and the figure has the row."""
    from digitcmp.cli import main

    db = tmp_path / "r.sqlite"
    assert main(reproduce_argv(tmp_path, ["table5"], seeds=2, epochs=1)) == 0
    store = Store(db, read_only=True)
    assert set(store.stored_keys().values()) == {False}
    store.close()
    assert main(reproduce_argv(tmp_path, ["table4"], seeds=2, epochs=1)) == 0
    store = Store(db, read_only=True)
    keys = store.stored_keys()
    assert len(keys) == 12 and sum(keys.values()) == 2  # the two Table 4 runs now have curves; no copies
    store.close()
    rows = _csv_rows(tmp_path / "out" / "figures" / "test_error_per_epoch.csv")
    assert {(r["experiment"], r["row"]) for r in rows} == {("table4", "SIAM + CNN + BN + AUX")}
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Missing from this figure" not in text
    assert not list(tmp_path.glob("*.lock"))  # the lock goes with a clean finish
    header = text.splitlines()[2]
    assert "Produced by `digitcmp reproduce --experiment table4 --seeds 2 --epochs 1`" in header
    assert str(tmp_path) not in text  # no scratch paths


def test_report_docs_header_names_commands_a_user_types(tmp_path):
    from digitcmp.cli import main

    synthetic_store(tmp_path / "r.sqlite", seeds=2, epochs=2).close()
    assert main(["report", "--db", str(tmp_path / "r.sqlite"), "--docs", "--out", str(tmp_path / "docs")]) == 0
    text = (tmp_path / "docs" / "results.md").read_text()
    assert "then `digitcmp report --docs`" in text.splitlines()[2]
    assert (tmp_path / "docs" / "figures" / "test_error_per_epoch.csv").is_file()
    assert not list((tmp_path / "docs" / "figures").glob("*.svg"))


def test_protocol_line_is_derived_from_the_configs(tmp_path):
    store = synthetic_store(tmp_path / "r.sqlite", seeds=2, epochs=None)
    text = write_report(store, tmp_path / "out").read_text()
    assert "batch 100, 25 epochs," in text
    store.add_sweep(["table1", "best"], 2, None, "digitcmp reproduce (test)")
    text = write_report(store, tmp_path / "out2").read_text()
    assert "25 epochs except some rows of Best recipe: 100" in text


HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(2)</script>",
    "[click](javascript:alert(3))",
    "`</code><svg onload=alert(4)>`",
    "![x](javascript:alert(5))",
    "<a href='javascript:alert(6)'>a</a> & more",
]


def report_page(folder, words: str) -> str:
    """The report page of a small store whose command line and host hold `words`."""
    from digitcmp.app.report_page import ReportPage

    folder.mkdir()
    synthetic_store(folder / "r.sqlite", seeds=2, epochs=2, command=f"digitcmp reproduce {words}", host=words).close()
    return ReportPage(folder / "r.sqlite").render()[0]


@pytest.fixture(scope="module")
def plain_page(tmp_path_factory) -> str:
    require("markdown")
    return report_page(tmp_path_factory.mktemp("plain") / "store", "plain words")


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory, plain_page) -> str:
    """One store whose command line and host hold every hostile text at once (one report to render)."""
    return report_page(tmp_path_factory.mktemp("hostile") / "store", " | ".join(HOSTILE))


@pytest.mark.parametrize("text", HOSTILE)
def test_texts_from_a_store_reach_the_report_page_as_text(text, plain_page, hostile_page):
    """A store made by someone else: whatever its texts hold is shown, never run as HTML. The page
    of a store whose texts are hostile has exactly the elements and links of one whose texts are plain."""
    import re

    markup = lambda html: sorted(re.findall(r"<(\w+)|(?:href|src)=\"([^\"]*)\"", html))
    assert markup(hostile_page) == markup(plain_page)  # not one element or link more
    assert html_escape(text, quote=False) in hostile_page  # and the text itself is there to read
