"""`digitcmp tune`: trials on validation pairs only (never a test pair), stored in Optuna's
storage and resumed by the same command, a kill losing at most the trial in flight, grid spaces
reproducing their choice from the stored trials, the report from the storage alone, and one
line for every bad setting."""

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digitcmp.testing.extras import require
from digitcmp.testing.processes import scaled_wait, sigint_as_usual

optuna = require("optuna")

from digitcmp.cli import main  # noqa: E402
from digitcmp.core import data  # noqa: E402
from digitcmp.run.executors import Execution  # noqa: E402
from digitcmp.tune.report import write_tuning_report  # noqa: E402
from digitcmp.tune.search import FINALIST_SEED_BASE, PROGRESS_STEPS, open_storage, stored_rescores, tune  # noqa: E402
from digitcmp.tune.spaces import SPACES, get_space  # noqa: E402

pytestmark = pytest.mark.slow  # tuning studies in subprocesses: outside the fast tier (pytest -m "not slow")

SCRIPT = str(Path(__file__).with_name("tiny_space.py"))


def states(storage, study_name) -> dict[int, str]:
    """Each trial's state, read from the storage file without writing to it (Optuna would create
    its tables in a file another process is still creating)."""
    conn = sqlite3.connect(f"file:{storage}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT t.number, t.state FROM trials t JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = ?",
            (study_name,),
        ).fetchall()
    finally:
        conn.close()
    return {number: state for number, state in rows}


def test_tuning_never_draws_a_test_pair(tmp_path, monkeypatch):
    load = data.load_mnist
    opened = []

    def only_training(split, *args, **kwargs):
        opened.append(split)
        if split != "train":
            raise AssertionError("the tuning path opened MNIST's test split")
        return load(split, *args, **kwargs)

    monkeypatch.setattr(data, "load_mnist", only_training)
    data._load_split_cached.cache_clear()  # nothing read earlier is reused either
    tune("tiny", str(tmp_path / "t.sqlite"), trials=2, progress=False)
    assert opened and set(opened) == {"train"}


def test_a_study_is_stored_and_the_same_command_resumes_it(tmp_path, capsys):
    storage = tmp_path / "t.sqlite"
    argv = ["tune", "tiny", "--storage", str(storage), "--no-progress"]
    assert main(argv + ["--trials", "3"]) == 0
    out = capsys.readouterr().out
    assert "tiny: chose trial" in out and "re-scored on fresh seeds" in out and "3 trials stored" in out
    first = optuna.load_study(study_name="tiny", storage=f"sqlite:///{storage}").get_trials()
    assert main(argv + ["--trials", "5", "--jobs", "2"]) == 0  # resumed, in two worker processes sharing the storage
    after = optuna.load_study(study_name="tiny", storage=f"sqlite:///{storage}").get_trials()
    done = [t for t in after if t.state.name in ("COMPLETE", "PRUNED")]
    assert 5 <= len(done) <= 6  # two workers may each start the last trial
    for old in first:  # the stored trials are kept as they were
        assert after[old.number].params == old.params and after[old.number].value == old.value
    runs = [t.user_attrs["runs"] for t in done if t.state.name == "COMPLETE"]
    assert all(len(r) == 2 and {x["seed"] for x in r} == {100, 101} for r in runs)  # K validation seeds


def tune_until(storage, ready, stop) -> tuple[subprocess.Popen, dict, str]:
    """Start `tune tiny_slow` in a process of its own, wait until ready(states) holds for what the
    storage shows, then stop(process); returns the process, the states seen then, and its stderr."""
    cmd = [sys.executable, SCRIPT, "tune", "tiny_slow", "--storage", str(storage), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_usual)
    seen = {}
    try:
        deadline = time.monotonic() + scaled_wait(120)
        while time.monotonic() < deadline and not ready(seen):
            time.sleep(0.2)
            try:
                seen = states(storage, "tiny_slow") if storage.exists() else {}
            except sqlite3.Error:  # not created yet
                pass
        stop(proc)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc, seen, err


def test_killing_tune_loses_at_most_the_trial_in_flight(tmp_path):
    storage = tmp_path / "t.sqlite"
    # Two complete trials, then a kill in the middle of the next.
    _, before, _ = tune_until(storage, lambda seen: list(seen.values()).count("COMPLETE") >= 2, subprocess.Popen.kill)
    complete_before = {n for n, s in before.items() if s == "COMPLETE"}
    assert len(complete_before) >= 2
    cmd = [sys.executable, SCRIPT, "tune", "tiny_slow", "--storage", str(storage), "--no-progress"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)  # the same command resumes
    after = states(storage, "tiny_slow")
    assert complete_before <= {n for n, s in after.items() if s == "COMPLETE"}  # nothing stored is lost
    assert sum(s in ("COMPLETE", "PRUNED") for s in after.values()) >= 6
    lost = [n for n, s in after.items() if s not in ("COMPLETE", "PRUNED")]
    assert len(lost) <= 1  # the trial that was in flight, left running or marked failed


def test_ctrl_c_is_one_line_and_marks_the_trial_failed(tmp_path):
    storage = tmp_path / "t.sqlite"

    def interrupt(proc) -> None:
        time.sleep(1.0)  # inside the trial's training (a trial here takes seconds), as a person's Ctrl-C would be
        proc.send_signal(signal.SIGINT)

    proc, _, err = tune_until(storage, lambda seen: "RUNNING" in seen.values(), interrupt)
    assert proc.returncode == 130 and err.strip() == "digitcmp: interrupted", err
    assert "RUNNING" not in states(storage, "tiny_slow").values()


def test_a_grid_space_reproduces_its_choice_from_the_stored_trials(tmp_path):
    storage = tmp_path / "t.sqlite"
    best = tune("tiny_grid", str(storage), execution=Execution(jobs=2), progress=False)  # two workers take distinct points
    assert set(best) == {"tiny_grid/sgd", "tiny_grid/adam"}
    space = get_space("tiny_grid")
    for key, grid_values in (("sgd", (0.03, 0.3, 1.0)), ("adam", (1e-3, 1e-2))):
        study = optuna.load_study(study_name=f"tiny_grid/{key}", storage=f"sqlite:///{storage}")
        complete = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
        assert sorted(t.params["lr"] for t in complete) == sorted(grid_values)  # every grid point, each once
        for t in complete:  # the value is the mean over both rows and both seeds
            assert len(t.user_attrs["runs"]) == 4 and {r["row"] for r in t.user_attrs["runs"]} == set(space.rows)
        rescored = stored_rescores(study)  # the finalists, re-scored on fresh seeds
        ranked = sorted(complete, key=lambda t: (t.value, t.number))
        in_use = next(t for t in complete if t.params["lr"] == space.in_use[key]["lr"])
        assert set(rescored) == {t.number for t in ranked[: space.finalists]} | {in_use.number}
        chosen = min(rescored, key=lambda n: (rescored[n]["value"], study.trials[n].value, n))
        assert best[f"tiny_grid/{key}"]["trial"] == chosen
        assert best[f"tiny_grid/{key}"]["rescored"] == rescored[chosen]["value"]
    assert tune("tiny_grid", str(storage), progress=False)  # a rerun finds the grid done and adds nothing
    study = optuna.load_study(study_name="tiny_grid/sgd", storage=f"sqlite:///{storage}")
    assert len(study.get_trials()) == 3
    path = write_tuning_report(f"sqlite:///{storage}", tmp_path / "out", ["tiny_grid"])
    text = path.read_text()
    assert "### Study `tiny_grid/sgd`" in text and "fnn, no bn %" in text and "Chosen: trial" in text
    assert ("the same" in text) and text.count("| 0.3 |") + text.count("| 0.03 |") >= 2


def test_the_report_comes_from_the_storage_with_optunas_plots(tmp_path, capsys):
    storage = tmp_path / "t.sqlite"
    tune("tiny", str(storage), trials=4, progress=False)
    assert main(["tune", "tiny", "--report", "--storage", str(storage), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "tuning.md").read_text()
    trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{storage}").get_trials()
    for t in trials:
        shown = f"{t.number} (start, in use)" if t.number == 0 else str(t.number)
        assert f"| {shown} | {t.state.name.lower()} |" in text
    assert trials[0].params == {"lr": 0.1, "hidden": 20}  # the search starts from the values in use now
    assert "Chosen: trial" in text and "re-scored %" in text and "Standard error of a complete trial's value" in text
    for name in ("tuning_tiny_history.png", "tuning_tiny_importance.png"):
        assert (tmp_path / "out" / "figures" / name).read_bytes().startswith(b"\x89PNG") and name in text


def test_list_shows_the_search_spaces(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "search spaces" in out
    for name in ("lr", "lr_table5", "best"):
        assert f"\n  {name} " in out


def test_the_values_in_use_and_each_start_lie_in_each_declared_space():
    """Each space's start and values in use are points of its own ranges (so a study can start from
    them), and the values in use are the ones the code uses. The best recipe's search starts from
    the recipe it searched around (hand_picked), and the code uses its choice (PRESETS['best'])."""
    from digitcmp.core.config import DEFAULT_LR, RunConfig
    from digitcmp.study.experiments import PRESETS, TABLE5_ROW_LR
    from digitcmp.tune.spaces import Choice

    for space in SPACES.values():
        for key in space.studies:
            for values in (space.in_use.get(key), space.start_values(key)):
                for name, value in (values or {}).items():
                    r = space.ranges(key)[name]
                    inside = r.encode(value) in r.labels() if isinstance(r, Choice) else r.low <= value <= r.high
                    assert inside, (space.name, key, name, value)
    assert get_space("lr").in_use == {opt: {"lr": lr} for opt, lr in DEFAULT_LR.items()}
    assert get_space("lr_table5").in_use == {row: {"lr": lr} for row, lr in TABLE5_ROW_LR.items()}
    best, hand_picked = RunConfig(**PRESETS["best"]), RunConfig(**PRESETS["hand_picked"])
    space = get_space("best")
    assert all(getattr(best, name) == value for name, value in space.in_use[""].items())
    assert all(getattr(hand_picked, name) == value for name, value in space.start_values("").items())
    assert space.in_use[""] != space.start_values("")


def test_a_search_the_code_adopted_reports_its_start_and_its_choice_in_use(tmp_path):
    """Once the code uses a search's choice (to the 4 significant digits the report prints), the
    report tags the start and the choice apart and says the code uses the choice; the search's
    finalists keep its start."""
    import dataclasses

    from digitcmp.tune.report import _finalists_section
    from digitcmp.tune.search import pick_finalists, trial_values

    storage = tmp_path / "t.sqlite"
    best = tune("tiny", str(storage), trials=5, progress=False)["tiny"]
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{storage}")
    tiny = get_space("tiny")
    chosen = trial_values(tiny, "", study.trials[best["trial"]])
    adopted_values = {n: float(f"{v:.4g}") if isinstance(v, float) else v for n, v in chosen.items()}
    adopted = dataclasses.replace(tiny, start={"": tiny.in_use[""]}, in_use={"": adopted_values})
    assert {t.number for t in pick_finalists(adopted, "", study)} >= {0, best["trial"]}
    text = "\n".join(_finalists_section(adopted, "", study))
    if best["trial"] == 0:
        assert "| 0 (chosen, start, in use) |" in text
    else:
        assert f"| {best['trial']} (chosen, in use) |" in text and "| 0 (start) |" in text
    assert text.rstrip().endswith(": the same.")
    # The values before the adoption: the report says the code does not use the choice.
    before = "\n".join(_finalists_section(tiny, "", study))
    assert ("**not** the same" in before) == (best["trial"] != 0)


def one_line(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and expected in err, err


def test_bad_settings_are_one_line(tmp_path, capsys, monkeypatch):
    storage = str(tmp_path / "t.sqlite")
    one_line(capsys, ["tune", "nonsense", "--storage", storage], "unknown search space 'nonsense'")
    one_line(capsys, ["tune", "tiny", "--trials", "0", "--storage", storage], "--trials")
    one_line(capsys, ["tune", "tiny", "--seeds", "x", "--storage", storage], "--seeds")
    one_line(capsys, ["tune", "tiny", "--jobs", "-1", "--storage", storage], "--jobs")
    one_line(capsys, ["tune", "--storage", storage], "give a search space")
    one_line(capsys, ["tune", "--report", "--storage", storage], "does not exist")
    assert main(["tune", "tiny", "--trials", "1", "--storage", storage, "--no-progress"]) == 0
    capsys.readouterr()
    one_line(capsys, ["tune", "tiny", "--seeds", "3", "--storage", storage], "was run with --seeds 2")
    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    content = foreign.read_bytes()
    one_line(capsys, ["tune", "tiny", "--storage", str(foreign)], "not an Optuna storage")
    assert foreign.read_bytes() == content  # refused untouched
    (tmp_path / "text.sqlite").write_text("hello")
    one_line(capsys, ["tune", "tiny", "--storage", str(tmp_path / "text.sqlite")], "not a SQLite file")
    one_line(capsys, ["tune", "tiny", "--storage", str(tmp_path)], "is a folder")
    one_line(capsys, ["tune", "tiny", "--storage", "/proc/none/t.sqlite"], "cannot create folder /proc/none")
    monkeypatch.setitem(sys.modules, "optuna", None)  # as without the extra
    one_line(capsys, ["tune", "tiny", "--storage", storage], "pip install -e '.[tune]'")


def test_trials_caps_a_grid_study_and_a_rerun_resumes_up_to_it(tmp_path):
    storage = tmp_path / "t.sqlite"

    def complete(key: str) -> list[float]:
        study = optuna.load_study(study_name=f"tiny_grid/{key}", storage=f"sqlite:///{storage}")
        return [t.params["lr"] for t in study.get_trials() if t.state.name == "COMPLETE"]

    tune("tiny_grid", str(storage), trials=1, progress=False)
    assert complete("sgd") == [0.03] and complete("adam") == [1e-3]  # one point each: the grid's first
    tune("tiny_grid", str(storage), trials=2, progress=False)
    assert complete("sgd") == [0.03, 0.3] and complete("adam") == [1e-3, 1e-2]  # resumed up to 2
    tune("tiny_grid", str(storage), trials=50, progress=False)  # more than the grid: every point, once
    assert sorted(complete("sgd")) == [0.03, 0.3, 1.0] and sorted(complete("adam")) == [1e-3, 1e-2]


def test_finalists_are_rescored_on_fresh_seeds_and_the_choice_is_theirs(tmp_path, monkeypatch):
    storage = tmp_path / "t.sqlite"
    best = tune("tiny", str(storage), trials=5, progress=False)["tiny"]
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{storage}")
    space = get_space("tiny")
    complete = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    rescored = stored_rescores(study)
    top = sorted(complete, key=lambda t: (t.value, t.number))[: space.finalists]
    assert set(rescored) == {t.number for t in top} | {0}  # the best trials and the values in use (trial 0)
    fresh = [FINALIST_SEED_BASE + k for k in range(space.seeds)]
    for entry in rescored.values():
        assert sorted(r["seed"] for r in entry["runs"]) == fresh  # seeds the search never used
        assert entry["value"] == pytest.approx(sum(r["error"] for r in entry["runs"]) / len(entry["runs"]))
    assert best["trial"] == min(rescored, key=lambda n: (rescored[n]["value"], study.trials[n].value, n))
    assert best["rescored"] == rescored[best["trial"]]["value"] and best["value"] == study.trials[best["trial"]].value

    # A rerun with nothing left to search re-scores nothing again.
    from digitcmp.tune import search as tune_module

    def no_training(*args, **kwargs):
        raise AssertionError("a finalist was re-scored twice")

    monkeypatch.setattr(tune_module, "score_runs", no_training)
    assert tune("tiny", str(storage), trials=5, progress=False)["tiny"] == best


def test_a_tpe_trial_reports_its_validation_error_every_5_percent(tmp_path):
    storage = tmp_path / "t.sqlite"
    tune("tiny_slow", str(storage), trials=1, progress=False)  # 60 epochs: reports at 5, 10, ..., 100 %
    (trial,) = [t for t in optuna.load_study(study_name="tiny_slow", storage=f"sqlite:///{storage}").get_trials()]
    steps = sorted(trial.intermediate_values)
    assert steps == list(range(5, PROGRESS_STEPS + 1, 5))
    errors = [trial.intermediate_values[s] for s in steps]
    assert all(0 <= v <= 1 for v in errors) and len(set(errors)) >= 5  # on 5000 pairs: a signal that moves


@pytest.mark.parametrize("storage_exists", [False, True], ids=["new storage", "existing storage"])
def test_several_tune_processes_share_one_storage_each_grid_point_trained_once(tmp_path, storage_exists):
    """Optuna lets several workers share a storage: three `digitcmp tune` processes started together,
    on a storage none of them made (or one an earlier run made), all end well, and every grid
    point is trained once."""
    storage = tmp_path / "shared" / "t.sqlite"
    if storage_exists:
        tune("tiny_grid", str(storage), trials=1, progress=False)  # one point of each study done already
    cmd = [sys.executable, SCRIPT, "tune", "tiny_grid", "--storage", str(storage), "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        outputs = [proc.communicate(timeout=600) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0 and "Traceback" not in err, err
    for key, points in (("sgd", 3), ("adam", 2)):
        study = optuna.load_study(study_name=f"tiny_grid/{key}", storage=f"sqlite:///{storage}")
        trained = [t.params["lr"] for t in study.get_trials() if t.state.name == "COMPLETE"]
        assert len(trained) == points and len(set(trained)) == points, trained  # each point once
        assert not [t for t in study.get_trials() if t.state.name in ("WAITING", "RUNNING")]
    assert sorted(p.name for p in storage.parent.iterdir()) == ["t.sqlite"]  # no lock file left


def _claim_until_empty(url: str) -> list[int]:
    """A worker's claims: ask for queued trials (telling each at once) until none is waiting."""
    study = optuna.load_study(study_name="race", storage=open_storage(url, claims_trials=True))
    claimed = []
    while study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        trial = study.ask()
        claimed.append(trial.number)
        study.tell(trial, 0.0, skip_if_finished=True)  # a trial claimed twice fails here without skip; counted below
    return claimed


def test_workers_on_one_sqlite_storage_never_claim_the_same_queued_trial(tmp_path):
    """Optuna claims a queued trial with a row lock SQLite lacks: without the storage's write-locked
    transactions two workers both took one trial in about one of 100 claims (CI saw it as
    "Cannot tell a COMPLETE trial")."""
    from concurrent.futures import ProcessPoolExecutor

    url = f"sqlite:///{tmp_path / 'race.sqlite'}"
    study = optuna.create_study(study_name="race", storage=open_storage(url))
    queued = 150
    for k in range(queued):
        study.enqueue_trial({"k": k})
    with ProcessPoolExecutor(2) as pool:
        first, second = pool.map(_claim_until_empty, [url, url])
    assert not set(first) & set(second)  # no trial claimed by both
    assert len(first) + len(second) >= queued and first and second  # both worked; every queued one claimed
    assert len(first) + len(second) == len(set(first) | set(second))


def test_an_interrupted_grid_study_resumes_to_the_same_points_and_choice(tmp_path, monkeypatch):
    """A grid point lost to an interruption is trained again in its own place: with --trials capping
    the study, the rerun trains the same points as an uninterrupted run, and chooses the same."""
    from digitcmp.tune import search

    def trained(storage) -> dict[str, list[float]]:
        out = {}
        for key in ("sgd", "adam"):
            study = optuna.load_study(study_name=f"tiny_grid/{key}", storage=f"sqlite:///{storage}")
            out[key] = sorted(t.params["lr"] for t in study.get_trials() if t.state.name == "COMPLETE")
        return out

    whole = tune("tiny_grid", str(tmp_path / "whole.sqlite"), trials=2, progress=False)
    objective, calls = search.objective, []

    def interrupted_at_the_second(trial, *args, **kwargs):
        calls.append(trial.number)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the sgd study's second point
        return objective(trial, *args, **kwargs)

    storage = tmp_path / "cut.sqlite"
    with monkeypatch.context() as m:
        m.setattr(search, "objective", interrupted_at_the_second)
        with pytest.raises(KeyboardInterrupt):
            tune("tiny_grid", str(storage), trials=2, progress=False)
    assert trained(storage) == {"sgd": [0.03], "adam": []}  # one point done, the second lost
    resumed = tune("tiny_grid", str(storage), trials=2, progress=False)
    assert trained(storage) == trained(tmp_path / "whole.sqlite") == {"sgd": [0.03, 0.3], "adam": [1e-3, 1e-2]}
    assert {k: v["params"] for k, v in resumed.items()} == {k: v["params"] for k, v in whole.items()}


def test_a_grid_worker_that_finds_its_point_taken_creates_no_trial(tmp_path):
    """The race a grid had: a worker sees one queued point, another claims it first. Claiming is
    one step, granted to one worker; the other gets nothing and no trial is created for it."""
    from digitcmp.tune.search import _claim_queued

    url = f"sqlite:///{tmp_path / 'g.sqlite'}"
    storage = open_storage(url, claims_trials=True)
    study = optuna.create_study(study_name="g", storage=storage)
    study.enqueue_trial({"lr": 0.3}, user_attrs={"grid_point": True})
    other = open_storage(url, claims_trials=True)  # a second worker's own connection
    first, second = _claim_queued(study, storage), _claim_queued(optuna.load_study(study_name="g", storage=other), other)
    assert first is not None and second is None
    assert [t.state.name for t in study.get_trials()] == ["RUNNING"]
