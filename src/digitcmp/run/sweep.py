"""Run what a sweep still misses and store each run as it finishes.

Missing runs are grouped into tasks: all the missing seeds of a config become one batched task
where batching seeds pays (engine.pays_to_batch: every net on a GPU, the FNN on a CPU), every
other run is a task of its own. On a CPU, tasks go to worker processes with one torch thread each
(the fastest use of a small CPU); only this parent process writes the store, one transaction per
finished run.
"""

from __future__ import annotations

import os

from ..study.plan import PlannedRun
from ..study.store import Store, provenance
from .executors import Execution
from .tasks import Outcome, plan_tasks, run_task


def run_missing(
    store: Store,
    planned: list[PlannedRun],
    execution: Execution | None = None,
    progress: bool = True,
    engine: str = "auto",
    checkpoints: str | os.PathLike | None = None,
) -> int:
    """Train and store every planned run not yet in the store, where `execution` says (worker
    processes here, or Ray tasks); returns how many were trained. With a checkpoints folder, the
    model of every run trained now is saved there too (default execution: in this process, on the CPU)."""
    execution = execution or Execution()
    from tqdm import tqdm

    stored = store.stored_keys()
    # A run is missing when it is not stored, or when the sweep draws its per-epoch test errors and
    # the stored copy lacks them (it was trained for an experiment that did not): then it is
    # trained again and takes that copy's place.
    key = lambda p: (p.config.config_hash(), p.seed)
    missing = [p for p in planned if key(p) not in stored or (p.test_error_curve and not stored[key(p)])]
    lacking_curve = {key(p) for p in missing if key(p) in stored}
    # On a cluster the device is resolved where each run trains (a CPU head may have GPU workers).
    tasks = plan_tasks(missing, execution.device, engine, store.engine_families(), resolve=execution.backend != "ray")
    # One task (or one job) runs in this process; more go to worker processes or Ray tasks.
    executor = execution.executor(tasks=len(tasks))
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
            prov = provenance(o.device, o.engine, o.node, execution.backend, o.cpu, o.isa, o.versions)
            store.add_run(o.run.experiment, o.run.row, o.run.config, o.result, prov, replace=key(o.run) in lacking_curve)
            bar.update(1)

    try:
        # A CPU is best used by one single-threaded process per core. A GPU is fed by several
        # processes too: at 10 seeds a task is bound by the Python that launches its kernels, so
        # tasks side by side finish sooner than one after another (docs/performance.md).
        calls = [(task, execution.device, execution.data_dir, checkpoints) for task in tasks]
        for outcomes in executor.results(run_task, calls):  # stored one run per transaction, as each task finishes
            record(outcomes)
    finally:
        bar.close()
    return len(missing)
