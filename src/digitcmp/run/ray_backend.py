"""The Ray backend of a sweep: each task a Ray task (one CPU, or a fraction of a GPU), outcomes
handed back to the driver as they finish; only the driver writes the store.

Workers run the same installed digitcmp (and its embedded MNIST) as the driver: on a cluster,
install the package on every node (docs/cluster.md). Start-up checks that every node runs the
driver's digitcmp and torch release (check_nodes). Reaching the cluster, and its failures, are
ray_connect's. Ray is an optional extra: `pip install -e .[ray]`.
"""

from __future__ import annotations

from ..common.host import node_name, note_node_detail
from ..common.version import __version__
from .errors import BackendError, SweepError
from .ray_connect import connected

MAX_RETRIES = 3  # a task whose worker process dies is run again at most this many times


def _note_ray_node() -> None:
    """Provenance names the Ray node a task ran on (host.node_name)."""
    import ray

    note_node_detail(f"ray node {ray.get_runtime_context().get_node_id()[:12]}")


def _call_on_worker(fn, args: tuple):
    """A Ray task: fn(*args) in a Ray worker process, one torch thread (or its GPU share)."""
    from ..core.perf import configure_process

    configure_process(1)
    _note_ray_node()
    return fn(*args)


def _worker_version():
    import torch

    _note_ray_node()
    return __version__, torch.__version__, node_name()


def release(torch_version: str) -> str:
    """A torch version without its build label: 2.13.0+cu130 and 2.13.0+cpu are one release, the
    same code on another device (docs/cluster.md has GPU nodes install their own build)."""
    return torch_version.split("+", 1)[0]


def version_mismatches(answers: list[tuple[str, str, str]], package: str, torch_version: str) -> list[str]:
    """The nodes (of answers: digitcmp's version, torch's, node) that do not run the driver's
    digitcmp or torch release, each named with both versions."""
    wrong = []
    for version, their_torch, node in answers:
        if version != package:
            wrong.append(f"{node} has digitcmp {version} (the driver {package})")
        elif release(their_torch) != release(torch_version):
            wrong.append(f"{node} has torch {their_torch} (the driver {torch_version})")
    return wrong


def check_nodes(ray, device: str) -> list[str]:
    """digitcmp's and torch's versions on every alive node that offers CPUs, against the driver's,
    and a GPU somewhere when the runs ask for one; returns the nodes."""
    import torch
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    alive = [n for n in ray.nodes() if n.get("Alive")]
    if device == "cuda" and not any(n.get("Resources", {}).get("GPU", 0) > 0 for n in alive):
        raise BackendError(
            "--device cuda asks the cluster's nodes for GPUs, and none of its nodes offers one; start the GPU "
            "workers with `ray start --address HEAD:PORT` on their machines (docs/cluster.md), or use --device cpu"
        )
    probe = ray.remote(num_cpus=0)(_worker_version)
    nodes = [n for n in alive if n.get("Resources", {}).get("CPU", 0) > 0]
    refs = [
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote() for n in nodes
    ]
    answers = ray.get(refs, timeout=120)
    wrong = version_mismatches(answers, __version__, torch.__version__)
    if wrong:
        raise BackendError(
            f"every node must run the driver's digitcmp and torch release, but {'; '.join(wrong)}: install the same "
            "versions on every node (docs/cluster.md)"
        )
    return [node for *_, node in answers]


def ray_results(
    fn, calls: list[tuple], address: str | None, device: str, gpus_per_task: float = 0.25, cpus: int | None = None
):
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
