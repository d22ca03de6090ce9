"""Run what a sweep still misses, in worker processes, and store each run as it finishes.

Workers train with one torch thread each (the fastest use of a small CPU); only this parent
process writes the store, one transaction per finished run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from .experiments import PlannedRun
from .store import Store, provenance


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _init_worker(data_dir) -> None:
    import torch

    torch.set_num_threads(1)
    from .data import load_mnist

    # Read and check MNIST once per worker, before the first run is timed.
    load_mnist("train", data_dir)
    load_mnist("test", data_dir)


def _train_one(run: PlannedRun, device: str, data_dir) -> tuple[PlannedRun, dict, str]:
    from .train import resolve_device, train_run

    result, _, _ = train_run(run.config, run.seed, device=device, data_dir=data_dir)
    return run, result, str(resolve_device(device))


def run_missing(
    store: Store,
    planned: list[PlannedRun],
    jobs: int = 1,
    device: str = "cpu",
    data_dir=None,
    progress: bool = True,
) -> int:
    """Train and store every planned run not yet in the store; returns how many were trained."""
    from tqdm import tqdm

    stored = store.stored_keys()
    missing = [p for p in planned if (p.config.config_hash(), p.seed) not in stored]
    bar = tqdm(
        total=len(planned),
        initial=len(planned) - len(missing),
        unit="run",
        desc="runs",
        disable=not progress,
        dynamic_ncols=True,
    )

    def record(run: PlannedRun, result: dict, dev: str) -> None:
        store.add_run(run.experiment, run.row, run.config, result, provenance(dev, "single"))
        bar.update(1)

    try:
        if jobs <= 1 or len(missing) <= 1:
            import torch

            torch.set_num_threads(1)
            for run in missing:
                record(*_train_one(run, device, data_dir))
        else:
            ctx = mp.get_context("spawn")  # a clean interpreter per worker, whatever the parent did
            with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(data_dir,)) as pool:
                pending = {pool.submit(_train_one, run, device, data_dir) for run in missing}
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        record(*future.result())
    finally:
        bar.close()
    return len(missing)
