"""The Ray backend of a sweep: each task a Ray task (one CPU, or a fraction of a GPU), outcomes
handed back to the driver as they finish; only the driver writes the store.

Workers run the same installed digitcmp (and its embedded MNIST) as the driver: on a cluster,
install the package on every node (docs/cluster.md). Start-up checks that every node runs the
driver's digitcmp and torch release (ray_connect.check_nodes). Reaching the cluster, and its
failures, are ray_connect's. Ray is an optional extra: `pip install -e .[ray]`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .errors import BackendError, SweepError
from .ray_connect import connected, note_ray_node

MAX_RETRIES = 3  # a task whose worker process dies is run again at most this many times


def _call_on_worker(fn, args: tuple):
    """A Ray task: fn(*args) in a Ray worker process, one torch thread (or its GPU share)."""
    from ..core.perf import configure_process

    configure_process(1)
    note_ray_node()
    return fn(*args)


def ray_results(
    fn: Callable, calls: list[tuple], address: str | None, device: str, gpus_per_task: float = 0.25, cpus: int | None = None
) -> Iterator:
    """fn(*call) for each call as Ray tasks (fn importable by name on every node); yields each
    result as it finishes. address None starts a local Ray instance (with `cpus` CPUs, default
    all), 'auto' or 'ray://host:port' or 'host:port' joins a running cluster (ray_connect.connected;
    a connection the command already made is used as it is). However the caller stops, the tasks
    still in flight are cancelled."""
    if device == "cuda" and not 0 < gpus_per_task <= 1:
        raise BackendError(f"--gpus-per-task must be in (0, 1], got {gpus_per_task}")
    with connected(address, device, cpus) as ray:
        remote = ray.remote(_call_on_worker).options(
            num_cpus=1,
            num_gpus=gpus_per_task if device == "cuda" else 0,
            max_retries=MAX_RETRIES,  # a worker that dies (killed, out of memory) is replaced and the task rerun
            retry_exceptions=False,  # an error in the task itself would fail again: report it instead
        )
        pending = {remote.remote(fn, call) for call in calls}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                pending.discard(done[0])
                try:
                    outcomes = ray.get(done[0])
                except ray.exceptions.RayTaskError as err:  # the task raised: the cause, in one line
                    cause = err.cause if getattr(err, "cause", None) is not None else err
                    raise SweepError(
                        f"a Ray task failed: {type(cause).__name__}: {' '.join(str(cause).split())[:300]}"
                    ) from None
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.RayError) as err:
                    raise SweepError(
                        f"a Ray task was lost after {MAX_RETRIES} retries ({type(err).__name__}); the runs stored so far "
                        "are kept: run the same command to resume"
                    ) from None
                yield outcomes
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
