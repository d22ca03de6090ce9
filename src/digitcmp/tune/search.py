"""`digitcmp tune SPACE`: an Optuna study of a search space (spaces.py), on validation pairs only,
stored in Optuna's RDB storage (a SQLite file by default) so that running the command again
resumes it and several processes can share it.

Each trial trains the space's rows on K validation seeds (100, 101, ...) in validation mode (the
seed's 1000 training pairs, scored on thousands of pairs of other MNIST training digits) and
returns their mean validation error (with the config's test-time views). While the first run of
a TPE trial trains, its error on the first 5000 validation pairs is reported to a median pruner
every 5 % of its training.
Grid spaces try every point of their grid, unpruned. Then the best trials and the values in use
are re-scored on K fresh seeds (200, 201, ...), and the choice is the best re-scored one: the
best of many trials on the same seeds is partly luck, its re-score is not.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..run.executors import Execution
from .samplers import PROGRESS_STEPS, SAMPLERS, TuneError, import_optuna
from .spaces import FINALIST_SEED_BASE, VALIDATION_SEED_BASE, SearchSpace, get_space

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial
    from sqlalchemy.engine import Connection

    from ..core.batches import PairData
    from ..core.config import RunConfig
    from ..core.inference import ModelStack
    from ..core.train import EpochCallback

DEFAULT_STORAGE_NAME = "tuning.sqlite"  # beside the results store: results/tuning.sqlite
CHECKPOINTS = 20  # reports to the pruner per run: every 5 % of its training
TRACK_PAIRS = 5000  # validation pairs the pruner's error is measured on (the first of the run's)
OPTUNA_TABLES = {"studies", "trials", "trial_values", "trial_params", "version_info"}


def _sqlite_file_url(path: Path, given: str) -> str:
    """The URL of a SQLite file storage, after the checks a path gets: a file that exists must be an
    Optuna storage (a foreign or damaged SQLite file is refused untouched); devices, FIFOs and
    sockets are refused; a symlink is written through (destinations.check_kind). A missing folder
    is created when the study starts (tune), as every writing flag's is."""
    from ..common.destinations import check_kind
    from ..study.store import checked_tables

    try:
        target = check_kind(path, "tuning storage")
    except OSError as err:
        raise TuneError(str(err)) from None
    if target.exists():
        conn = sqlite3.connect(target.as_uri() + "?mode=ro", uri=True)  # read-only: a refused file stays as it was
        try:
            tables = checked_tables(conn, given, "tuning storage", "give another --storage")
        except sqlite3.DatabaseError:
            raise TuneError(f"tuning storage {given} is not a SQLite file; give an Optuna storage or a new path") from None
        finally:
            conn.close()
        if tables and not tables & OPTUNA_TABLES:  # (a storage another process is creating has some of them)
            raise TuneError(f"tuning storage {given} is a SQLite file but not an Optuna storage; give another path")
    return f"sqlite:///{target}"


def storage_url(storage: str) -> str:
    """The checked URL of a tuning storage given as a SQLite file path or as an RDB URL
    ('sqlite:///path', 'postgresql://...'): every storage that cannot be used is one TuneError line
    here, before anything is created. (A server's storage is checked when it is opened.)"""
    if "://" not in storage:
        return _sqlite_file_url(Path(storage), storage)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(storage)
        url.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        raise TuneError(
            f"tuning storage {storage!r} is not a storage URL this machine can open; give a file path, "
            "sqlite:///PATH, or a database URL such as postgresql://user@host/db (with its driver installed)"
        ) from None
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise TuneError(f"tuning storage {storage!r}: an in-memory SQLite storage is lost at exit; give a file")
        return _sqlite_file_url(Path(url.database), url.database)
    return storage


def open_storage(url: str, claims_trials: bool = False) -> optuna.storages.RDBStorage:
    """Optuna's storage for a URL from storage_url; a database that cannot be reached is one TuneError line.
    A worker that claims queued trials passes claims_trials (see _write_locked_transactions); readers
    do not, so that a read-only storage can still be reported on."""
    optuna = import_optuna()
    from sqlalchemy.exc import SQLAlchemyError

    locked = claims_trials and url.startswith("sqlite")
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if locked:
        engine["connect_args"]["isolation_level"] = None  # the driver's own BEGIN off: the hook below begins
    template = url.replace("{", "{{").replace("}", "}}")  # Optuna fills {SCHEMA_VERSION} in: a path's braces are text
    try:
        # Heartbeats: a trial whose process was killed is marked failed once it stops beating.
        storage = optuna.storages.RDBStorage(template, engine_kwargs=engine, heartbeat_interval=10, grace_period=30)
    except (SQLAlchemyError, ImportError, ValueError) as err:
        detail = " ".join(str(getattr(err, "orig", None) or err).split())[:300]
        raise TuneError(f"cannot open tuning storage: {detail}") from None
    if locked:
        _write_locked_transactions(storage.engine)
    return storage


def _write_locked_transactions(engine) -> None:
    """Every transaction on this SQLite engine takes the database's write lock when it begins.
    Optuna claims a queued trial by reading it as WAITING and then writing RUNNING, and relies on a
    row lock (SELECT ... FOR UPDATE) that SQLite does not have; Python's driver begins a transaction
    only at the write, so two workers could both read WAITING and train the same trial (one then
    fails with "Cannot tell a COMPLETE trial"). BEGIN IMMEDIATE makes the read and the write one step."""
    from sqlalchemy import event

    @event.listens_for(engine, "begin")
    def begin_immediately(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


@dataclass(frozen=True)
class StudyPlan:
    """What one worker does for one study of a space."""

    space: SearchSpace  # sent whole to the workers: a space declared at run time works too
    key: str  # the study's key in space.studies
    url: str
    trials: int  # trials of the study in total (complete or pruned)
    seeds: int
    sampler_seed: int
    device: str
    data_dir: str | None


def tracked_error(stack: ModelStack, datas: list[PairData], pairs: int = TRACK_PAIRS) -> float:
    """The error of the stack's answers on the first `pairs` validation pairs of each seed (the
    pairs alone), averaged over seeds. On thousands of pairs it moves in steps of a few hundredths
    of a percent; unlike the loss, it does not punish an ingredient that changes confidence alone
    (label smoothing)."""
    from ..core.inference import AnswerSpec, answer, error_rates

    x = torch.stack([d.eval_x[:pairs] for d in datas])
    y = torch.stack([d.eval_y[:pairs] for d in datas])
    p_le = answer(stack, x, [AnswerSpec(d.mean, d.std) for d in datas]).p_le
    return float(error_rates(p_le, y).mean())


def score_runs(
    configs: dict[str, RunConfig],
    seeds: list[int],
    device: str = "cpu",
    data_dir: str | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[dict]:
    """Train each row's config on each seed in validation mode; one record per run (row, seed,
    error, seconds). on_epoch, if given, follows the first run's training (train.fit)."""
    from ..core.train import train_run

    runs = []
    for row, config in configs.items():
        for seed in seeds:
            result, _, _ = train_run(
                config, seed, device, data_dir=data_dir, track_errors=False, on_epoch=None if runs else on_epoch
            )
            runs.append({"row": row, "seed": seed, "error": result.validation_error, "seconds": result.train_seconds})
    return runs


def mean_error(runs: list[dict]) -> float:
    """The mean validation error of runs."""
    return sum(r["error"] for r in runs) / len(runs)


def objective(
    trial: optuna.Trial, space: SearchSpace, key: str, seeds: int, device: str = "cpu", data_dir: str | None = None
) -> float:
    """One trial: the space's rows on `seeds` validation seeds with the trial's values; their mean
    validation error. Per-run errors are kept as the trial's user attribute 'runs'. A TPE trial's
    first run reports its error on TRACK_PAIRS validation pairs every 5 % of its training to the pruner."""
    optuna = import_optuna()
    ranges = space.ranges(key)
    configs = space.configs(key, {name: r.suggest(trial, name) for name, r in ranges.items()})
    epochs = next(iter(configs.values())).epochs

    def report(epoch: int, stack: ModelStack, datas: list[PairData]) -> None:
        # Steps are the percent of training done, so that 60- and 150-epoch schedules are compared
        # at the same point of their cosine decay.
        if CHECKPOINTS * epoch // epochs == CHECKPOINTS * (epoch - 1) // epochs:
            return
        trial.report(tracked_error(stack, datas), PROGRESS_STEPS * epoch // epochs)
        if trial.should_prune():
            raise optuna.TrialPruned()

    seed_list = [VALIDATION_SEED_BASE + k for k in range(seeds)]
    runs = score_runs(configs, seed_list, device, data_dir, on_epoch=None if space.is_grid else report)
    trial.set_user_attr("runs", runs)
    return mean_error(runs)


def trial_values(space: SearchSpace, key: str, trial: FrozenTrial) -> dict:
    """The field values of a stored trial (as the config takes them)."""
    ranges = space.ranges(key)
    return {name: ranges[name].decode(value) for name, value in trial.params.items()}


def value_text(value: object) -> str:
    """A field's value as the reports print it: floats to 4 significant digits, the precision a
    chosen value is adopted with."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def same_values(a: dict, b: dict | None) -> bool:
    """Whether two sets of field values are the same as the reports print them (value_text)."""
    return b is not None and a.keys() == b.keys() and all(value_text(a[n]) == value_text(b[n]) for n in a)


def trial_of(space: SearchSpace, key: str, trials: list[FrozenTrial], values: dict | None) -> FrozenTrial | None:
    """The first of the trials with these values (same_values), or None."""
    return next((t for t in trials if same_values(trial_values(space, key, t), values)), None)


def pick_finalists(space: SearchSpace, key: str, study: optuna.Study) -> list[FrozenTrial]:
    """The trials re-scored before a choice: the space.finalists best complete ones (by search
    value, the first of equal ones), the search's start and the trial of the values in use now,
    where stored."""
    optuna = import_optuna()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    ranked = sorted(complete, key=lambda t: (t.value, t.number))
    chosen = ranked[: space.finalists]
    for values in (space.start_values(key), space.in_use.get(key)):
        baseline = trial_of(space, key, ranked, values)
        if baseline is not None and baseline not in chosen:
            chosen.append(baseline)
    return chosen


def rescore_seeds(seeds: int) -> list[int]:
    """The fresh seeds finalists are re-scored on."""
    return [FINALIST_SEED_BASE + k for k in range(seeds)]


def rescore_run(
    index: int, space: SearchSpace, key: str, values: dict, row: str, seed: int, device: str, data_dir: str | None
) -> dict:
    """One run of a finalist on a fresh seed (a worker's task): (index, run record)."""
    (run,) = score_runs({row: space.configs(key, values)[row]}, [seed], device, data_dir)
    return index, run


def rescore_finalists(space: SearchSpace, key: str, url: str, seeds: int, execution: Execution) -> dict[int, float]:
    """Re-score each finalist not yet re-scored on the fresh seeds FINALIST_SEED_BASE, ... (the
    space's rows, the study's number of seeds), stored as the study's user attribute
    'rescored:NUMBER'; returns {trial number: re-scored mean error}."""
    optuna = import_optuna()
    study = optuna.load_study(study_name=space.study_name(key), storage=open_storage(url))
    fresh = rescore_seeds(seeds)
    todo, rescored = {}, {}
    for t in pick_finalists(space, key, study):
        stored = study.user_attrs.get(f"rescored:{t.number}")
        if stored is not None and sorted({r["seed"] for r in stored["runs"]}) == fresh:
            rescored[t.number] = stored["value"]
        else:
            todo[t.number] = trial_values(space, key, t)
    owners = [(number, row, seed) for number in todo for row in space.rows for seed in fresh]
    calls = [
        (i, space, key, todo[number], row, seed, execution.device, execution.data_dir)
        for i, (number, row, seed) in enumerate(owners)
    ]
    runs: dict[int, list] = {number: [] for number in todo}
    for index, run in execution.executor().results(rescore_run, calls):
        number = owners[index][0]
        runs[number].append(run)
        if len(runs[number]) == len(space.rows) * len(fresh):  # a finalist done: stored at once
            value = mean_error(runs[number])
            study.set_user_attr(f"rescored:{number}", {"runs": runs[number], "value": value})
            rescored[number] = value
    return rescored


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial with the lowest value (the first of equal ones), or None."""
    optuna = import_optuna()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return min(complete, key=lambda t: t.value, default=None)


def chosen_trial(study: optuna.Study, rescored: dict[int, float]) -> FrozenTrial | None:
    """The finalist with the lowest re-scored error (ties to the lower search value), or None."""
    trials = [study.trials[number] for number in rescored]
    return min(trials, key=lambda t: (rescored[t.number], t.value, t.number), default=None)


def stored_rescores(study: optuna.Study) -> dict[int, dict]:
    """The finalists' re-scores stored in a study: {trial number: {"runs", "value"}}."""
    prefix = "rescored:"
    return {int(k[len(prefix) :]): v for k, v in study.user_attrs.items() if k.startswith(prefix)}


def _done(study: optuna.Study) -> int:
    optuna = import_optuna()
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def run_study_worker(plan: StudyPlan) -> int:
    """One worker's share of a study (in any process: this one, a local worker, a Ray task): trials
    until the study holds plan.trials complete or pruned ones. Returns the trials it ran."""
    optuna = import_optuna()
    space = plan.space
    storage = open_storage(plan.url, claims_trials=True)
    study = optuna.load_study(
        study_name=space.study_name(plan.key),
        storage=storage,
        sampler=SAMPLERS[space.sampler].sampler(plan.sampler_seed),
        pruner=SAMPLERS[space.sampler].pruner(),
    )
    ran, mine = 0, []

    def trial_objective(trial: optuna.Trial) -> float:
        mine.append(trial.number)
        return objective(trial, space, plan.key, plan.seeds, plan.device, plan.data_dir)

    try:
        if space.is_grid:
            # A grid trains only its queued points, each claimed here: Optuna's optimize() would
            # create a new trial whenever another worker took the last queued point first.
            while _done(study) < plan.trials and (trial_id := _claim_queued(study, storage)) is not None:
                _run_claimed(study, storage, trial_id, trial_objective)
                ran += 1
        else:
            while _done(study) < plan.trials:
                study.optimize(trial_objective, n_trials=1, catch=())
                ran += 1
    except BaseException:
        # Interrupted (Ctrl-C, a signal) or failed: the trial in flight is marked failed now, so that a
        # rerun does not wait for its heartbeat to go stale. (A killed process leaves that to the heartbeat.)
        for number in mine[-1:]:  # the one in flight, if any
            try:
                study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            except Exception:  # the storage is unreachable too: the heartbeat will do it
                break
        raise
    return ran


def _claim_queued(study, storage) -> int | None:
    """The id of a queued trial of the study, claimed (WAITING -> RUNNING, which the storage grants
    to one worker only); None when none is left."""
    optuna = import_optuna()
    study_id = storage.get_study_id_from_name(study.study_name)
    for queued in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, queued.number)
        if storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.RUNNING):
            return trial_id
    return None


def _run_claimed(study, storage, trial_id: int, trial_objective) -> None:
    """What optimize() does with a trial, for one claimed here: its heartbeat recorded while it runs
    (so that a killed worker's trial goes stale and is queued again), then its value or its pruning told."""
    import threading

    optuna = import_optuna()
    trial = optuna.Trial(study, trial_id)
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            storage.record_heartbeat(trial_id)
            stop.wait(storage.get_heartbeat_interval() or 10)

    heart = threading.Thread(target=beat, daemon=True, name="digitcmp-trial-heartbeat")
    heart.start()
    try:
        value = trial_objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return
    finally:
        stop.set()
        heart.join()
    study.tell(trial, value)


def grid_points(space: SearchSpace, key: str) -> list[dict]:
    """Every point of a grid study, in the grid's order (the first value of each range first)."""
    grid = space.grid(key)
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def prepare_studies(space: SearchSpace, url: str, seeds: int, trials: int | None = None) -> None:
    """Create the space's studies in the storage (or find them), each recording its seeds: a study
    resumed with other seeds would mix two objectives, so that is refused. A grid study queues its
    first `trials` points (all, by default) that are not done."""
    with _preparing(url):
        _prepare(space, url, seeds, trials)


@contextmanager
def _preparing(url: str):
    """One process at a time creates or extends a storage's studies (Optuna's schema and a study
    made by two processes at once collide; two grids queued at once would train each point twice);
    then all of them run trials together, as Optuna intends."""
    path = _sqlite_path(url)
    if path is None:
        yield
        return
    from ..common.locks import LockBusy, file_lock

    try:
        with file_lock(path.with_name(f".{path.name}.digitcmp-prepare"), wait_s=300):
            yield
    except LockBusy:
        raise TuneError(f"tuning storage {path} is being prepared by another process for over 5 minutes") from None


def _prepare(space: SearchSpace, url: str, seeds: int, trials: int | None) -> None:
    optuna = import_optuna()
    storage = open_storage(url)
    for key in space.studies:
        name = space.study_name(key)
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
        stored = study.user_attrs.get("seeds")
        if stored is None:
            study.set_user_attr("seeds", seeds)
            study.set_user_attr("space", space.name)
            study.set_user_attr("description", space.description)
            if not space.is_grid and space.start_values(key) is not None:
                # The search's start is its first trial: the baseline, measured on the same seeds.
                study.enqueue_trial(start_params(space, key), user_attrs={"enqueued": "the search's start"})
        elif stored != seeds:
            raise TuneError(
                f"study {name} in this storage was run with --seeds {stored}; pass --seeds {stored} to resume it, "
                "or give another --storage"
            )
        if space.is_grid:
            _queue_grid(study, space, key, grid_target(space, key, trials))


def grid_target(space: SearchSpace, key: str, trials: int | None) -> int:
    """How many points of a grid study are trained: the first `trials` of its order (all by default)."""
    points = len(grid_points(space, key))
    return min(trials or points, points)


def _queue_grid(study, space: SearchSpace, key: str, target: int) -> None:
    """Queue each of the grid's first `target` points that is not complete, running or queued
    already (a failed or killed one again), so that parallel workers take distinct points. Only
    those: a point lost to an interruption is trained again in its own place, never one beyond the
    target instead, so an interrupted and an uninterrupted study train the same points."""
    optuna = import_optuna()
    optuna.storages.fail_stale_trials(study)  # trials of killed processes whose heartbeat stopped
    live = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    names = list(space.grid(key))
    # A queued trial has no params yet, only the values it was queued with.
    taken = {
        tuple((t.params or t.system_attrs.get("fixed_params", {})).get(n) for n in names)
        for t in study.get_trials(deepcopy=False, states=live)
    }
    for point in grid_points(space, key)[:target]:
        if tuple(point[n] for n in names) not in taken:
            study.enqueue_trial(point, user_attrs={"grid_point": True})


def start_params(space: SearchSpace, key: str) -> dict:
    """The search's start (SearchSpace.start_values) as Optuna parameters."""
    ranges = space.ranges(key)
    return {name: ranges[name].encode(value) for name, value in space.start_values(key).items()}


def tune(
    space_name: str,
    storage: str,
    trials: int | None = None,
    seeds: int | None = None,
    execution: Execution | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, dict]:
    """Run (or resume) every study of the space up to `trials` trials each, with `execution.jobs`
    workers where `execution` says (default: one, in this process), then re-score its finalists on
    fresh seeds; returns each study's choice, the finalist with the lowest re-scored error:
    {study name: {"value" (search), "rescored", "params", "trial", "trials"}}."""
    execution = execution or Execution()
    optuna = import_optuna()
    space = get_space(space_name)
    seeds = seeds or space.seeds
    url = storage_url(storage)
    summary = {}
    with using_storage(url):
        prepare_studies(space, url, seeds, trials)
        for key in space.studies:
            target = grid_target(space, key, trials) if space.is_grid else trials or space.trials
            plans = [
                StudyPlan(space, key, url, target, seeds, seed + 1000 * w, execution.device, execution.data_dir)
                for w in range(execution.jobs)
            ]
            name = space.study_name(key)
            _run_plans(plans, execution, progress)
            rescored = rescore_finalists(space, key, url, seeds, execution)
            study = optuna.load_study(study_name=name, storage=open_storage(url))
            choice = chosen_trial(study, rescored)
            if choice is not None:
                summary[name] = {
                    "value": choice.value,
                    "rescored": rescored[choice.number],
                    "params": choice.params,
                    "trial": choice.number,
                    "trials": _done(study),
                }
    return summary


@contextmanager
def using_storage(url: str) -> Iterator[None]:
    """Use a tuning storage beside any other process that uses it. For a SQLite file: its folders
    are created, and every process that uses it holds a shared lock beside it while it does; a
    call that created the file and fails before any trial started removes the file and its new
    folders, but only while no other process uses it. (A database server's storage needs neither.)"""
    from ..common.destinations import file_target, folders_made, remove_created
    from ..common.locks import shared_use

    path = _sqlite_path(url)
    if path is None:
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            # Its new folders are removed on failure once they are empty (after the lock file is gone).
            stack.enter_context(folders_made(path.parent, f"tuning storage {path}"))
            file_target(path, "tuning storage")
        except OSError as err:
            raise TuneError(str(err)) from None
        with shared_use(path.with_name(f".{path.name}.digitcmp-users")) as alone:
            new = not path.exists()
            try:
                yield
            except BaseException:
                if new and alone() and not _any_trial(url):  # nothing worth keeping, and no one else's
                    remove_created([path, Path(f"{path}-journal")], [])
                raise


def _sqlite_path(url: str) -> Path | None:
    """The file of a SQLite storage URL, or None for a database server."""
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def _any_trial(url: str) -> bool:
    """Whether any trial of the storage ever started (the points this call queued do not count)."""
    path = Path(url.removeprefix("sqlite:///"))
    if not path.exists():
        return False
    try:
        conn = sqlite3.connect(path.as_uri() + "?mode=ro", uri=True)
        try:
            (n,) = conn.execute("SELECT COUNT(*) FROM trials WHERE state != 'WAITING'").fetchone()  # queued: ours
        finally:
            conn.close()
    except sqlite3.Error:  # no trials table yet, or unreadable: nothing worth keeping
        return False
    return n > 0


def _run_plans(plans: list[StudyPlan], execution: Execution, progress: bool) -> None:
    """The plans' workers, one per plan (here, in local processes, or as Ray tasks), all on one
    study, with a progress bar of its trials and its best value so far, read from the storage."""
    import threading

    from tqdm import tqdm

    optuna = import_optuna()
    first = plans[0]
    name, url, target = first.space.study_name(first.key), first.url, first.trials
    stop = threading.Event()

    def watch() -> None:
        bar = tqdm(total=target, desc=name, unit="trial", disable=not progress, dynamic_ncols=True)
        study = optuna.load_study(study_name=name, storage=open_storage(url))
        while True:
            finished = stop.wait(2.0)
            try:
                done, best = _done(study), best_trial(study)
            except Exception:  # a busy SQLite file: try again at the next tick
                continue
            bar.n = min(done, target)
            if best is not None:
                bar.set_postfix_str(f"best {100 * best.value:.2f} % (trial {best.number})")
            bar.refresh()
            if finished:
                bar.close()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        executor = execution.executor()  # one worker a plan (jobs of them)
        for _ in executor.results(run_study_worker, [(p,) for p in plans]):
            pass
    finally:
        stop.set()
        watcher.join(timeout=10)


def default_storage(db: str | os.PathLike) -> str:
    """The tuning storage beside a results store."""
    return str(Path(db).parent / DEFAULT_STORAGE_NAME)
