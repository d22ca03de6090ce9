import numpy as np

from digitcmp.experiments import STUDY_EXPERIMENTS, expand
from digitcmp.report import write_report
from digitcmp.store import Store, provenance


def _small_store(path, seeds=4, epochs=3):
    """A store filled with synthetic runs of every study experiment (report plumbing only)."""
    store = Store(path)
    store.add_sweep(list(STUDY_EXPERIMENTS), seeds, epochs, "digitcmp reproduce (test)")
    rng = np.random.default_rng(0)
    for p in expand(list(STUDY_EXPERIMENTS), seeds, epochs):
        err = float(rng.uniform(0.05, 0.3))
        result = {
            "seed": p.seed,
            "test_error": err,
            "train_error": err / 3,
            "train_seconds": 1.0,
            "epochs": [
                {
                    "epoch": e + 1,
                    "loss": 1.0 / (e + 1),
                    "loss_main": 0.6 / (e + 1),
                    "loss_aux": 0.4 / (e + 1),
                    "train_error": 0.1,
                    "test_error": err,
                }
                for e in range(epochs)
            ],
        }
        store.add_run(p.experiment, p.row, p.config, result, provenance("cpu", "single"))
    return store


def test_report_has_every_section_and_file(tmp_path):
    store = _small_store(tmp_path / "r.sqlite")
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

    _small_store(tmp_path / "r.sqlite").close()
    assert main(["report", "--db", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "report.md").exists()
    assert main(["report", "--db", str(tmp_path / "missing.sqlite")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_leaves_the_store_unchanged_and_refuses_foreign_files(tmp_path, capsys):
    import hashlib
    import sqlite3

    from digitcmp.cli import main

    digest = lambda p: hashlib.md5(p.read_bytes()).hexdigest()  # noqa: E731
    store = _small_store(tmp_path / "r.sqlite")
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
    from digitcmp.report import DEFAULT_EXPLANATION, _explanation

    assert "blows up" in _explanation("table5", "SGD + Sigmoid")
    assert _explanation("table5_tuned", "SGD + Sigmoid") == DEFAULT_EXPLANATION  # its rate is its own
    assert "barely beat chance" in _explanation("table1", "FNN")  # row-wide explanations still apply


def test_report_header_names_every_commit_the_runs_came_from(tmp_path):
    store = _small_store(tmp_path / "r.sqlite", seeds=2, epochs=2)
    text = write_report(store, tmp_path / "one").read_text()
    assert "git commits" not in text
    store.conn.execute("UPDATE runs SET git_commit = 'feedc0de' WHERE id % 2 = 0")
    total = store.count()
    text = write_report(store, tmp_path / "two").read_text()
    header = text.splitlines()[2]
    assert "git commits" in header and f"feedc0de ({total // 2} runs)" in header
