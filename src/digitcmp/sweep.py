"""Run what a sweep still misses and store each run as it finishes.

Missing runs are grouped into tasks: all the missing seeds of a config become one batched task
where batching seeds pays (engine.pays_to_batch: every net on a GPU, the FNN on a CPU), every
other run is a task of its own. On a CPU, tasks go to worker processes with one torch thread each
(the fastest use of a small CPU); only this parent process writes the store, one transaction per
finished run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from .experiments import PlannedRun
from .store import Store, node_name, provenance


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Task:
    """Runs of one config trained together (batched) or a single run."""

    runs: tuple[PlannedRun, ...]
    batched: bool


ENGINES = ("auto", "single", "batched")
BACKENDS = ("local", "ray")


def plan_tasks(missing: list[PlannedRun], device_type: str, engine: str = "auto") -> list[Task]:
    """Group the missing runs into tasks: engine 'auto' batches the seeds of a config where that
    pays, 'batched' wherever it is exact (no dropout, no ensemble), 'single' never."""
    from .engine import pays_to_batch, supports_batching
    from .train import resolve_device

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    dev = resolve_device(device_type)
    batch = {"auto": lambda c: pays_to_batch(c, dev), "batched": supports_batching, "single": lambda c: False}[engine]
    by_config: dict[str, list[PlannedRun]] = {}
    for run in missing:
        by_config.setdefault(run.config.config_hash(), []).append(run)
    tasks = []
    for runs in by_config.values():
        if len(runs) > 1 and batch(runs[0].config):
            tasks.append(Task(tuple(runs), batched=True))
        else:
            tasks.extend(Task((run,), batched=False) for run in runs)
    # Longest first keeps the workers busy to the end.
    return sorted(tasks, key=lambda t: -estimated_cost(t.runs[0].config) * len(t.runs))


ARCH_COST = {"fnn": 1, "cnn": 4, "split_cnn": 8, "siamese_cnn": 8}  # relative time per epoch on 1000 pairs


def estimated_cost(config) -> float:
    """Relative training time of one run: per-epoch cost of the architecture, times epochs,
    training pairs and ensemble members (a 100-epoch run on 5000 pairs is ~20x a study run)."""
    return ARCH_COST.get(config.arch, 8) * config.epochs * config.pairs / 1000 * config.ensemble


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


class SweepError(RuntimeError):
    """A sweep that cannot go on (a worker died); what was stored stays, and the sweep resumes."""


def _init_worker(data_dir, parent_pid: int) -> None:
    import signal

    from .perf import configure_process

    # Ctrl-C reaches the whole process group: the parent alone handles it, and stops the workers
    # (a run in flight is lost, as with any interruption; stored runs are safe).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent(parent_pid)
    configure_process(1)
    from .data import load_mnist

    # Read and check MNIST once per worker, before the first run is timed.
    load_mnist("train", data_dir)
    load_mnist("test", data_dir)


def _end_with_parent(parent_pid: int) -> None:
    """Make this worker end when the sweep's parent process ends, however it ends (SIGKILL
    included): the kernel's parent-death signal on Linux, and a watcher thread everywhere."""
    import ctypes
    import signal
    import sys
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent_pid:  # the parent ended before the signal was set up
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def checkpoint_path(folder, run: PlannedRun):
    """Where `reproduce --checkpoints DIR` keeps a run's weights."""
    from pathlib import Path

    return Path(folder) / f"{run.experiment}-{run.config.config_hash()}-seed{run.seed}.safetensors"


@dataclass(frozen=True)
class Outcome:
    """A finished run, as a worker returns it to the process that stores it."""

    run: PlannedRun
    result: dict
    device: str
    engine: str
    node: str
    """The machine (and, under Ray, the node) that trained it."""


def run_task(task: Task, device: str, data_dir, checkpoints=None) -> list[Outcome]:
    """Train a task; returns an Outcome per run. With a checkpoints folder, each run's model is
    saved there (an ensemble with all its members)."""
    from .checkpoint import save_checkpoint
    from .engine import train_seeds
    from .train import resolve_device, train_run

    dev = resolve_device(device)
    if task.batched:
        first = task.runs[0]
        results, stack = train_seeds(
            first.config,
            [r.seed for r in task.runs],
            device=device,
            data_dir=data_dir,
            track_errors=first.test_error_curve,
        )
        states = [stack.state_dict(i) for i in range(len(task.runs))]
        engine = f"batched x{len(task.runs)}"
        outcomes = [Outcome(run, result, _device_name(dev), engine, node_name()) for run, result in zip(task.runs, results)]
    else:
        (run,) = task.runs
        result, model, _ = train_run(
            run.config, run.seed, device=device, data_dir=data_dir, track_errors=run.test_error_curve
        )
        states, outcomes = [model.state_dict()], [Outcome(run, result, _device_name(dev), "single", node_name())]
    if checkpoints is not None:
        for o, state in zip(outcomes, states):
            r = o.result
            save_checkpoint(checkpoint_path(checkpoints, o.run), state, o.run.config, r["input_mean"], r["input_std"], r)
    return outcomes


def local_outcomes(tasks: list[Task], jobs: int, device: str, data_dir, checkpoints=None):
    """Run tasks in worker processes on this machine; yields each task's outcomes as it finishes."""
    yield from worker_results(run_task, [(task, device, data_dir, checkpoints) for task in tasks], jobs, data_dir)


def worker_results(fn, calls: list[tuple], jobs: int, data_dir):
    """fn(*call) for each call in worker processes on this machine (fn importable by name); yields
    each result as it finishes.

    However the caller stops (an exception, Ctrl-C, a termination signal), the workers stop too:
    work in flight is lost, what the calls stored is kept."""
    ctx = mp.get_context("spawn")  # a clean interpreter per worker, whatever the parent did
    # Stopping workers mid-task leaves the pool's queue semaphores to multiprocessing's resource
    # tracker, which removes them and warns on stderr; that warning would break the one-line report
    # of an interruption. The tracker takes its warning filters from this process's -W options.
    quiet = "ignore::UserWarning:multiprocessing.resource_tracker"
    if quiet not in sys.warnoptions:
        sys.warnoptions.append(quiet)
    pool = ProcessPoolExecutor(
        min(jobs, len(calls)), mp_context=ctx, initializer=_init_worker, initargs=(data_dir, os.getpid())
    )
    finished = False
    try:
        pending = {pool.submit(fn, *call) for call in calls}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
        finished = True
    except BrokenProcessPool:
        raise SweepError(
            "a worker process died while training (killed, or out of memory); the runs stored so far are kept: "
            "run the same command to resume"
        ) from None
    finally:
        if not finished:
            # The executor has no public way to stop a task in flight: end its processes.
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
        pool.shutdown(wait=finished, cancel_futures=True)


def run_missing(
    store: Store,
    planned: list[PlannedRun],
    jobs: int = 1,
    device: str = "cpu",
    data_dir=None,
    progress: bool = True,
    engine: str = "auto",
    checkpoints=None,
    backend: str = "local",
    address: str | None = None,
    gpus_per_task: float = 0.25,
) -> int:
    """Train and store every planned run not yet in the store; returns how many were trained.
    With a checkpoints folder, the model of every run trained now is saved there too. backend:
    'local' (worker processes here, `jobs` of them) or 'ray' (Ray tasks on the cluster at
    `address`, or on a Ray instance started here; `gpus_per_task` of a GPU each with device cuda)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    from tqdm import tqdm

    stored = store.stored_keys()
    # A run is missing when it is not stored, or when the sweep draws its per-epoch test errors and
    # the stored copy lacks them (it was trained for an experiment that did not): then it is
    # trained again and takes that copy's place.
    key = lambda p: (p.config.config_hash(), p.seed)  # noqa: E731
    missing = [p for p in planned if key(p) not in stored or (p.test_error_curve and not stored[key(p)])]
    lacking_curve = {key(p) for p in missing if key(p) in stored}
    tasks = plan_tasks(missing, device, engine)
    bar = tqdm(
        total=len(planned),
        initial=len(planned) - len(missing),
        unit="run",
        desc="runs",
        disable=not progress,
        dynamic_ncols=True,
    )

    def record(outcomes: list[Outcome]) -> None:
        for o in outcomes:
            prov = provenance(o.device, o.engine, host=o.node, backend=backend)
            store.add_run(o.run.experiment, o.run.row, o.run.config, o.result, prov, replace=key(o.run) in lacking_curve)
            bar.update(1)

    try:
        # A CPU is best used by one single-threaded process per core. A GPU is fed by several
        # processes too: at 10 seeds a task is bound by the Python that launches its kernels, and
        # on an H200 12 tasks side by side took 30-34 s against 41 s one after another.
        if backend == "ray":
            from .ray_backend import ray_outcomes

            finished = ray_outcomes(tasks, address, device, data_dir, checkpoints, gpus_per_task, cpus=jobs)
        elif jobs <= 1 or len(tasks) <= 1:
            finished = (run_task(task, device, data_dir, checkpoints) for task in tasks)
        else:
            finished = local_outcomes(tasks, jobs, device, data_dir, checkpoints)
        for outcomes in finished:  # stored one run per transaction, as each task finishes
            record(outcomes)
    finally:
        bar.close()
    return len(missing)
