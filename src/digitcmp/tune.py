"""`digitcmp tune SPACE`: an Optuna study of a search space (spaces.py), on validation pairs only,
stored in Optuna's RDB storage (a SQLite file by default) so that running the command again
resumes it and several processes can share it.

Each trial trains the space's rows on K validation seeds (100, 101, ...) in validation mode and
returns their mean validation error (with the config's test-time views). While the first run of
a trial trains, its per-epoch validation error is reported to a median pruner, by the share of
training done (so that 60- and 150-epoch schedules are compared at the same point of their
cosine decay). Grid spaces try every point of their grid, unpruned.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import warnings
from dataclasses import dataclass
from pathlib import Path

from .spaces import VALIDATION_SEED_BASE, SearchSpace, get_space

DEFAULT_STORAGE_NAME = "tuning.sqlite"  # beside the results store: results/tuning.sqlite
PROGRESS_STEPS = 100  # pruning steps per run: the percent of its training done
OPTUNA_TABLES = {"studies", "trials", "trial_values", "trial_params", "version_info"}


class TuneError(ValueError):
    """A bad storage, space or setting for `digitcmp tune`."""


def _import_optuna():
    try:
        import optuna
    except ImportError:
        raise TuneError("digitcmp tune needs the tune extra (optuna is missing): pip install -e '.[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed or interrupted trial is our one line, not a log
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _sqlite_file_url(path: Path, given: str) -> str:
    """The URL of a SQLite file storage, after the checks a path gets: a file that exists must be an
    Optuna storage (a foreign or damaged SQLite file is refused untouched); a new one needs a folder
    that exists and can be written; devices, FIFOs and sockets are refused; a symlink is written
    through (destinations.file_target)."""
    from .destinations import file_target
    from .store import checked_tables

    try:
        target = file_target(path, "tuning storage")
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


def open_storage(url: str):
    """Optuna's storage for a URL from storage_url; a database that cannot be reached is one TuneError line."""
    optuna = _import_optuna()
    from sqlalchemy.exc import SQLAlchemyError

    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    template = url.replace("{", "{{").replace("}", "}}")  # Optuna fills {SCHEMA_VERSION} in: a path's braces are text
    try:
        # Heartbeats: a trial whose process was killed is marked failed once it stops beating.
        return optuna.storages.RDBStorage(template, engine_kwargs=engine, heartbeat_interval=10, grace_period=30)
    except (SQLAlchemyError, ImportError, ValueError) as err:
        detail = " ".join(str(getattr(err, "orig", None) or err).split())[:300]
        raise TuneError(f"cannot open tuning storage: {detail}") from None


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


def _sampler(space: SearchSpace, key: str, seed: int):
    optuna = _import_optuna()
    if space.sampler == "grid":
        # Grid points are queued trials with every value fixed (prepare_studies): the sampler is never asked.
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: trials running in other workers count as tried, so workers do not propose the same point
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _pruner(space: SearchSpace):
    optuna = _import_optuna()
    if space.sampler == "grid":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=PROGRESS_STEPS // 2)


def objective(trial, space: SearchSpace, key: str, seeds: int, device: str = "cpu", data_dir=None) -> float:
    """One trial: the space's rows on `seeds` validation seeds with the trial's values; their mean
    validation error. Per-run errors are kept as the trial's user attribute 'runs'."""
    optuna = _import_optuna()
    from .train import train_run

    if space.sampler == "grid" and not trial.user_attrs.get("grid_point"):
        # Another worker took the last queued point between our check and this trial: nothing to run.
        raise optuna.TrialPruned("no grid point left")
    ranges = space.ranges(key)
    chosen = {name: r.suggest(trial, name) for name, r in ranges.items()}
    configs = space.configs(key, chosen)
    prune = space.sampler != "grid"
    runs, total = [], 0.0

    for row, config in configs.items():
        for k in range(seeds):
            seed = VALIDATION_SEED_BASE + k

            def report(epoch: int, errors, config=config, first=not runs) -> None:
                step = round(PROGRESS_STEPS * epoch / config.epochs)
                if not first or (epoch > 1 and step == round(PROGRESS_STEPS * (epoch - 1) / config.epochs)):
                    return  # other runs are not reported; over 100 epochs, one report per percent
                trial.report(float(errors[0]), step)
                if trial.should_prune():
                    raise optuna.TrialPruned()

            result, _, _ = train_run(
                config, seed, device, data_dir=data_dir, track_errors=prune and not runs, on_epoch=report
            )
            runs.append({"row": row, "seed": seed, "error": result["test_error"], "seconds": result["train_seconds"]})
            total += result["test_error"]
    trial.set_user_attr("runs", runs)
    return total / len(runs)


def best_trial(study):
    """The complete trial with the lowest value (the first of equal ones), or None."""
    optuna = _import_optuna()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return min(complete, key=lambda t: t.value, default=None)


def _done(study) -> int:
    optuna = _import_optuna()
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def run_study_worker(plan: StudyPlan) -> int:
    """One worker's share of a study (in any process: this one, a local worker, a Ray task): trials
    until the study holds plan.trials complete or pruned ones. Returns the trials it ran."""
    optuna = _import_optuna()
    space = plan.space
    study = optuna.load_study(
        study_name=space.study_name(plan.key),
        storage=open_storage(plan.url),
        sampler=_sampler(space, plan.key, plan.sampler_seed),
        pruner=_pruner(space),
    )
    ran, mine = 0, []

    def trial_objective(trial) -> float:
        mine.append(trial.number)
        return objective(trial, space, plan.key, plan.seeds, plan.device, plan.data_dir)

    def more() -> bool:
        if space.sampler == "grid" and not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            return False  # every grid point taken
        return _done(study) < plan.trials  # a grid too stops at --trials (its points in the grid's order)

    try:
        while more():
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


def grid_points(space: SearchSpace, key: str) -> list[dict]:
    """Every point of a grid study, in the grid's order (the first value of each range first)."""
    grid = space.grid(key)
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def prepare_studies(space: SearchSpace, url: str, seeds: int) -> None:
    """Create the space's studies in the storage (or find them), each recording its seeds: a study
    resumed with other seeds would mix two objectives, so that is refused."""
    optuna = _import_optuna()
    storage = open_storage(url)
    for key in space.studies:
        name = space.study_name(key)
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
        stored = study.user_attrs.get("seeds")
        if stored is None:
            study.set_user_attr("seeds", seeds)
            study.set_user_attr("space", space.name)
            study.set_user_attr("description", space.description)
            if space.sampler != "grid" and key in space.in_use:
                # The values in use now are the first trial: the baseline, measured on the same seeds.
                study.enqueue_trial(in_use_params(space, key), user_attrs={"enqueued": "the values in use now"})
        elif stored != seeds:
            raise TuneError(
                f"study {name} in this storage was run with --seeds {stored}; pass --seeds {stored} to resume it, "
                "or give another --storage"
            )
        if space.sampler == "grid":
            _queue_grid(study, space, key)


def _queue_grid(study, space: SearchSpace, key: str) -> None:
    """Queue each grid point that is not complete, running or queued already (a failed or killed
    one again), so that parallel workers take distinct points."""
    optuna = _import_optuna()
    optuna.storages.fail_stale_trials(study)  # trials of killed processes whose heartbeat stopped
    live = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    names = list(space.grid(key))
    # A queued trial has no params yet, only the values it was queued with.
    taken = {
        tuple((t.params or t.system_attrs.get("fixed_params", {})).get(n) for n in names)
        for t in study.get_trials(deepcopy=False, states=live)
    }
    for point in grid_points(space, key):
        if tuple(point[n] for n in names) not in taken:
            study.enqueue_trial(point, user_attrs={"grid_point": True})


def in_use_params(space: SearchSpace, key: str) -> dict:
    """The values in use now as Optuna parameters."""
    ranges = space.ranges(key)
    return {name: ranges[name].encode(value) for name, value in space.in_use[key].items()}


def tune(
    space_name: str,
    storage: str,
    trials: int | None = None,
    seeds: int | None = None,
    jobs: int = 1,
    backend: str = "local",
    address: str | None = None,
    device: str = "cpu",
    data_dir=None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, dict]:
    """Run (or resume) every study of the space up to `trials` trials each; returns each study's
    best trial: {study name: {"value", "params", "trials"}}."""
    optuna = _import_optuna()
    space = get_space(space_name)
    seeds = seeds or space.seeds
    url = storage_url(storage)
    new_file = _new_sqlite_file(url)
    summary = {}
    try:
        prepare_studies(space, url, seeds)
        for key in space.studies:
            points = len(grid_points(space, key)) if space.sampler == "grid" else None
            target = min(trials or points, points) if points is not None else trials or space.trials
            plans = [StudyPlan(space, key, url, target, seeds, seed + 1000 * w, device, data_dir) for w in range(jobs)]
            name = space.study_name(key)
            _run_plans(plans, backend, address, progress)
            study = optuna.load_study(study_name=name, storage=open_storage(url))
            best = best_trial(study)
            if best is not None:
                summary[name] = {"value": best.value, "params": best.params, "trials": _done(study)}
    except BaseException:
        if new_file is not None and not _any_trial(url):
            new_file.unlink(missing_ok=True)  # a storage this call created and that holds nothing: no file left behind
        raise
    return summary


def _new_sqlite_file(url: str) -> Path | None:
    """The SQLite file of url if it does not exist yet (this call will create it), else None."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return None if path.exists() else path


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


def _run_plans(plans: list[StudyPlan], backend: str, address: str | None, progress: bool) -> None:
    """The plans' workers, one per plan (here, in local processes, or as Ray tasks), all on one
    study, with a progress bar of its trials and its best value so far, read from the storage."""
    import threading

    from tqdm import tqdm

    optuna = _import_optuna()
    first = plans[0]
    name, url, target, jobs = first.space.study_name(first.key), first.url, first.trials, len(plans)
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
        if jobs == 1 and backend == "local":
            run_study_worker(plans[0])
        elif backend == "ray":
            from .ray_backend import ray_results

            for _ in ray_results(run_study_worker, [(p,) for p in plans], address, first.device, cpus=jobs):
                pass
        else:
            from .sweep import worker_results

            for _ in worker_results(run_study_worker, [(p,) for p in plans], jobs, first.data_dir):
                pass
    finally:
        stop.set()
        watcher.join(timeout=10)


def default_storage(db: str | os.PathLike) -> str:
    return str(Path(db).parent / DEFAULT_STORAGE_NAME)
