import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from digitcmp.cli import main
from digitcmp.core.config import RunConfig
from digitcmp.core.records import RunResult
from digitcmp.study.store import Store, StoreError, provenance
from digitcmp.testing.processes import sigint_as_usual


def _fake_result(seed, epochs=2, error=0.1):
    return RunResult.from_dict(
        {
            "seed": seed,
            "input_mean": 33.0,
            "input_std": 70.0,
            "test_error": error,
            "train_error": error / 2,
            "train_seconds": 0.5,
            "epochs": [
                {
                    "epoch": e + 1,
                    "loss": 1.0 / (e + 1),
                    "loss_main": 0.5,
                    "loss_aux": 0.5,
                    "train_error": 0.1,
                    "test_error": 0.2,
                }
                for e in range(epochs)
            ],
        }
    )


def test_round_trip(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    config = RunConfig(arch="cnn")
    assert store.add_run("table2", "CNN + BN", config, _fake_result(3), provenance("cpu", "single"))
    (run,) = store.runs(config.config_hash(), seeds=10)
    assert run["seed"] == 3 and run["test_error"] == 0.1 and run["device"] == "cpu" and run["torch_version"]
    stored_config = store.conn.execute("SELECT config FROM runs").fetchone()[0]
    assert RunConfig.from_dict(json.loads(stored_config)) == config
    assert [e["epoch"] for e in store.epochs([run["id"]])[run["id"]]] == [1, 2]
    # the same (config, seed) is never stored twice
    assert not store.add_run("table2", "CNN + BN", config, _fake_result(3, error=0.3), provenance("cpu", "single"))
    assert store.count() == 1 and store.stored_keys() == {(config.config_hash(), 3): True}


def test_second_writer_is_refused(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    other = Store(tmp_path / "r.sqlite")
    with store.exclusive():
        with pytest.raises(StoreError, match="in use by another digitcmp reproduce"):
            with other.exclusive():
                pass


@pytest.mark.parametrize("other_path", ["symlink", "symlink to symlink", "dotted path"])
def test_the_lock_belongs_to_the_file_not_the_path(tmp_path, other_path):
    (tmp_path / "sub").mkdir()
    store = Store(tmp_path / "r.sqlite")
    other = {
        "symlink": tmp_path / "sub" / "link.sqlite",
        "symlink to symlink": tmp_path / "link2.sqlite",
        "dotted path": tmp_path / "sub" / ".." / "r.sqlite",
    }[other_path]
    if other_path == "symlink":
        other.symlink_to(tmp_path / "r.sqlite")
    elif other_path == "symlink to symlink":
        (tmp_path / "sub" / "link.sqlite").symlink_to(tmp_path / "r.sqlite")
        other.symlink_to(tmp_path / "sub" / "link.sqlite")
    second = Store(other)
    with store.exclusive():
        with pytest.raises(StoreError, match="in use by another digitcmp reproduce"):
            with second.exclusive():
                pass
    with second.exclusive():  # free again once the first is done
        pass
    assert not list(tmp_path.rglob("*.lock"))


def test_not_a_database_is_a_clear_error_and_left_alone(tmp_path, capsys):
    bogus = tmp_path / "x.sqlite"
    bogus.write_bytes(b"precious data that is not sqlite" * 100)
    code = main(
        [
            "reproduce",
            "--experiment",
            "table1",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--db",
            str(bogus),
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert code == 2 and "cannot use results store" in capsys.readouterr().err
    assert bogus.read_bytes() == b"precious data that is not sqlite" * 100


def test_resume_skips_stored_runs(tmp_path, capsys, reproduce_argv):
    args = reproduce_argv(tmp_path, ["table1"])
    assert main(args) == 0
    assert "4 runs planned, 4 trained" in capsys.readouterr().out
    assert main(args + ["--seeds", "3"]) == 0
    assert "6 runs planned, 2 trained, 4 already stored" in capsys.readouterr().out


def _stored_count(db) -> int:
    try:
        return sqlite3.connect(db, timeout=5).execute("SELECT COUNT(*) FROM runs").fetchone()[0] if db.exists() else 0
    except sqlite3.OperationalError:  # the schema is not written yet
        return 0


def _start_sweep_and_wait(cmd, db, runs: int, **popen) -> tuple[subprocess.Popen, int]:
    """Start a sweep in its own process group; return once `runs` are stored (or it ended)."""
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, preexec_fn=sigint_as_usual, **popen)
    count, deadline = 0, time.time() + 120
    while time.time() < deadline and proc.poll() is None and count < runs:
        time.sleep(0.05)
        count = _stored_count(db)
    return proc, count


@pytest.mark.slow  # sweeps, training or processes in subprocesses
def test_sigkill_mid_sweep_then_resume(tmp_path, reproduce_argv):
    db = tmp_path / "r.sqlite"
    cmd = [sys.executable, "-m", "digitcmp"] + reproduce_argv(tmp_path, ["table3", "table4"], seeds=4, epochs=2, jobs=2)
    proc, count = _start_sweep_and_wait(cmd, db, runs=2, stderr=subprocess.DEVNULL)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its workers, mid-sweep
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the sweep ended before it could be killed"
    assert 2 <= count < 8
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 8
    assert conn.execute("SELECT COUNT(*) FROM (SELECT DISTINCT config_hash, seed FROM runs)").fetchone()[0] == 8
    # every stored run has all its epochs: nothing half-written survived the kill
    assert conn.execute("SELECT COUNT(*) FROM epochs").fetchone()[0] == 8 * 2


@pytest.mark.slow  # sweeps, training or processes in subprocesses
def test_ctrl_c_mid_sweep_is_one_line_and_keeps_stored_runs(tmp_path, reproduce_argv):
    db = tmp_path / "r.sqlite"
    cmd = [sys.executable, "-m", "digitcmp"] + reproduce_argv(tmp_path, ["table3"], seeds=4, epochs=3, jobs=2)
    proc, _ = _start_sweep_and_wait(cmd, db, runs=1, stderr=subprocess.PIPE, text=True)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the parent and its workers
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "digitcmp: interrupted"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert 1 <= conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] < 4


def test_plan_puts_the_longest_tasks_first():
    from digitcmp.run.tasks import estimated_cost, plan_tasks
    from digitcmp.study.experiments import EXPERIMENTS
    from digitcmp.study.plan import expand

    tasks = plan_tasks(expand(list(EXPERIMENTS)), "cpu")
    costs = [estimated_cost(t.runs[0].config) * len(t.runs) for t in tasks]
    assert costs == sorted(costs, reverse=True)
    first = tasks[0].runs[0].config
    # the learning curve's 5000-pair recipe runs (100 epochs) outweigh everything else
    assert first.pairs == 5000 and first.epochs == 100
    fnn_batched = [t for t in tasks if t.runs[0].config.arch == "fnn" and t.batched]
    assert fnn_batched and all(len(t.runs) > 1 for t in fnn_batched)


def _planned(config, seeds):
    from digitcmp.study.plan import PlannedRun

    return [PlannedRun("table1", "FNN", config, seed, test_error_curve=False) for seed in seeds]


def test_a_config_s_missing_seeds_take_the_engine_of_its_stored_runs():
    """The batched and the single engine differ in the last digits, so a row never mixes them: a
    config's missing seeds follow its stored runs (against auto's own choice, and for one seed too);
    an engine asked for that differs is refused, naming both; a config with none stored, or an old
    store's mixed one, takes the usual rule."""
    from digitcmp.run.tasks import plan_tasks

    fnn, cnn = RunConfig(arch="fnn", epochs=1, pairs=100), RunConfig(arch="cnn", epochs=1, pairs=100)
    missing = _planned(fnn, [2, 3, 4])
    auto = plan_tasks(missing, "cpu")
    assert [t.batched for t in auto] == [True]  # auto batches the FNN's seeds on a CPU
    single = plan_tasks(missing, "cpu", stored={fnn.config_hash(): {"single"}})
    assert [t.batched for t in single] == [False] * 3
    one = plan_tasks(_planned(cnn, [5]), "cpu", stored={cnn.config_hash(): {"batched"}})
    assert [(t.batched, len(t.runs)) for t in one] == [(True, 1)]
    assert [t.batched for t in plan_tasks(missing, "cpu", "single", {cnn.config_hash(): {"batched"}})] == [False] * 3
    mixed = plan_tasks(missing, "cpu", stored={fnn.config_hash(): {"single", "batched"}})
    assert [t.batched for t in mixed] == [True]
    with pytest.raises(ValueError, match="trained by the single engine, and --engine batched would mix"):
        plan_tasks(missing, "cpu", "batched", {fnn.config_hash(): {"single"}})


def test_on_a_cluster_the_device_is_the_workers_to_resolve():
    """plan_tasks for Ray (resolve=False): 'cuda' is planned by the GPU's rule (every net's seeds
    batched) without a GPU here; resolved here, the same plan is refused on a machine without one."""
    import torch

    from digitcmp.run.tasks import plan_tasks

    cnn = RunConfig(arch="cnn", epochs=1, pairs=100)
    tasks = plan_tasks(_planned(cnn, [0, 1, 2]), "cuda", resolve=False)
    assert [(t.batched, len(t.runs)) for t in tasks] == [(True, 3)]
    assert [t.batched for t in plan_tasks(_planned(cnn, [0, 1, 2]), "auto", resolve=False)] == [False] * 3
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is available"):
            plan_tasks(_planned(cnn, [0, 1]), "cuda")


def test_a_run_records_the_versions_of_the_node_that_trained_it(tmp_path):
    """A worker's digitcmp, torch and commit (Outcome.versions, from run_task) are what the store
    keeps, not the driver's."""
    from digitcmp.run.tasks import Task, node_versions, run_task

    config = RunConfig(arch="fnn", epochs=1, pairs=100, test_pairs=100)
    (outcome,) = run_task(Task(tuple(_planned(config, [0])), batched=False), "cpu", None)
    assert outcome.versions == node_versions() and outcome.versions[1] == __import__("torch").__version__
    store = Store(tmp_path / "v.sqlite")
    prov = provenance(outcome.device, outcome.engine, "gpu-node", "ray", "a CPU", "an ISA", ("9.9", "2.13.0+cu130", "abc"))
    store.add_run("table1", "FNN", config, outcome.result, prov)
    (run,) = store.runs(config.config_hash(), 10)
    assert (run["torch_version"], run["git_commit"], run["host"]) == ("2.13.0+cu130", "abc", "gpu-node")
    store.close()


def test_a_resumed_sweep_stores_every_seed_of_a_config_with_one_engine(tmp_path):
    """Through run_missing and a real store: two seeds trained by the single engine, then the sweep
    resumed with auto (which batches the FNN) trains the rest by the single engine too; resumed
    with --engine batched it is refused before anything is trained, and the store is unchanged."""
    from digitcmp.run.sweep import run_missing

    config = RunConfig(arch="fnn", epochs=1, pairs=100, test_pairs=100)
    store = Store(tmp_path / "s.sqlite")
    assert run_missing(store, _planned(config, [0, 1]), engine="single", progress=False) == 2
    assert run_missing(store, _planned(config, range(4)), progress=False) == 2
    assert store.engine_families() == {config.config_hash(): {"single"}}
    with pytest.raises(ValueError, match="--engine single"):
        run_missing(store, _planned(config, range(6)), engine="batched", progress=False)
    assert store.count() == 4
    run_ids = [r["id"] for r in store.runs(config.config_hash(), 100)]
    assert store.engines(run_ids) == {"single": 4}
    store.close()


# ---- failures that leave nothing in the way of the rerun


def test_a_store_that_cannot_be_created_is_removed_and_the_rerun_works(tmp_path, monkeypatch):
    """A full disk while the new store's tables are made (SQLite says "disk I/O error"): the empty
    file and the folders made for it are removed, so the same path works once there is space."""
    import digitcmp.study.store as store_module

    path = tmp_path / "new" / "deeper" / "s.sqlite"
    schema = store_module.SCHEMA
    monkeypatch.setattr(store_module, "SCHEMA", schema + "\nSELECT raise_disk_io_error();")  # fails halfway
    with pytest.raises(StoreError, match=f"cannot use results store {path}"):
        Store(path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(store_module, "SCHEMA", schema)
    Store(path).close()
    Store(path, read_only=True).close()  # a digitcmp store, not "is not a digitcmp results store"


def test_a_failed_open_of_an_existing_store_leaves_it_as_it_was(tmp_path, monkeypatch):
    import digitcmp.study.store as store_module

    path = tmp_path / "s.sqlite"
    Store(path).close()
    before = path.read_bytes()
    monkeypatch.setattr(store_module, "SCHEMA", store_module.SCHEMA + "\nSELECT raise_disk_io_error();")
    with pytest.raises(StoreError):
        Store(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("flag", ["--db", "--out", "--checkpoints"])
def test_a_writing_flag_under_a_regular_file_is_one_line_and_creates_nothing(tmp_path, capsys, flag, one_line_error):

    (tmp_path / "notes.txt").write_text("mine\n")
    inside = str(tmp_path / "notes.txt" / "deeper" / ("s.sqlite" if flag == "--db" else "folder"))
    argv = ["reproduce", "--experiment", "table1", "--seeds", "1", "--epochs", "1", "--no-progress",
            "--db", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "out"), flag, inside]  # fmt: skip
    err = one_line_error(argv, "notes.txt")
    assert "File exists" not in err and "Errno" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no store, no report folder


def test_a_refused_reproduce_creates_no_folder(tmp_path, capsys, one_line_error):

    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    argv = ["reproduce", "--experiment", "table1", "--seeds", "1", "--epochs", "1", "--no-progress", "--db", str(foreign),
            "--out", str(tmp_path / "new" / "out"), "--checkpoints", str(tmp_path / "ckpt")]  # fmt: skip
    one_line_error(argv, "not a digitcmp results store")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.sqlite"]


@pytest.mark.slow  # sweeps, training or processes in subprocesses
def test_every_writing_flag_creates_the_folders_it_needs(tmp_path, capsys):
    db, out, ckpt = tmp_path / "a" / "s.sqlite", tmp_path / "b" / "c" / "out", tmp_path / "d" / "ckpt"
    argv = ["reproduce", "--experiment", "table1", "--seeds", "1", "--epochs", "1", "--no-progress", "--db", str(db),
            "--out", str(out), "--checkpoints", str(ckpt)]  # fmt: skip
    assert main(argv) == 0
    assert db.is_file() and (out / "report.md").is_file() and any(ckpt.iterdir())
    report = tmp_path / "e" / "f"
    assert main(["report", "--db", str(db), "--out", str(report)]) == 0 and (report / "report.md").is_file()


@pytest.mark.slow  # sweeps, training or processes in subprocesses
def test_an_io_error_while_writing_names_its_file(tmp_path, capsys, monkeypatch, one_line_error):

    db = tmp_path / "s.sqlite"
    argv = ["reproduce", "--experiment", "table1", "--seeds", "1", "--epochs", "1", "--no-progress", "--db", str(db),
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    err = one_line_error(["report", "--db", str(db), "--out", str(tmp_path / "out")], "No space left on device")
    assert str(tmp_path / "out") in err and "cannot write" in err


@pytest.mark.slow  # sweeps, training or processes in subprocesses
def test_each_run_records_its_cpu_and_instruction_sets_and_the_report_states_them(tmp_path, capsys):
    from digitcmp.common.host import cpu_model
    from digitcmp.core.perf import instruction_set

    db = tmp_path / "s.sqlite"
    argv = ["reproduce", "--experiment", "table1", "--seeds", "1", "--epochs", "1", "--no-progress", "--db", str(db),
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT cpu, isa FROM runs").fetchall()
    assert rows and set(rows) == {(cpu_model(), instruction_set())}
    assert instruction_set().startswith("ATen ") and ", oneDNN " in instruction_set()
    # A store written before these columns: its runs say so, and the report too.
    conn.execute("ALTER TABLE runs DROP COLUMN cpu")
    conn.execute("ALTER TABLE runs DROP COLUMN isa")
    conn.commit()
    conn.close()
    assert main(["report", "--db", str(db), "--out", str(tmp_path / "old")]) == 0
    assert "CPU not recorded (instruction sets not recorded): 2 runs" in (tmp_path / "old" / "report.md").read_text()
    Store(db).close()  # opened for writing: the columns are added, NULL for the older runs
    conn = sqlite3.connect(db)
    assert set(conn.execute("SELECT cpu, isa FROM runs").fetchall()) == {(None, None)}
    conn.close()
    text = (tmp_path / "out" / "report.md").read_text()
    from digitcmp.study.report import md_text

    assert f"Hardware of these numbers: {md_text(cpu_model())} ({md_text(instruction_set())}): 2 runs" in text


@pytest.mark.slow  # sweeps, training or processes in subprocesses
def test_the_instruction_set_follows_the_caps_torch_and_onednn_take():
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"}
    code = "from digitcmp.core.perf import instruction_set; print(instruction_set())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "ATen DEFAULT, oneDNN sse41", out.stderr
