"""The Ray backend of a sweep: each task a Ray task (one CPU, or a fraction of a GPU), outcomes
handed back to the driver as they finish; only the driver writes the store.

Workers run the same installed digitcmp (and its embedded MNIST) as the driver: on a cluster,
install the package on every node (docs/cluster.md). Start-up checks that every node imports the
same digitcmp version as the driver. Ray is an optional extra: `pip install -e .[ray]`.
"""

from __future__ import annotations

import logging
import os

from ..common import interrupts
from ..common.host import node_name, note_node_detail, usable_cores
from ..common.version import __version__
from .errors import BackendError, SweepError

MAX_RETRIES = 3  # a task whose worker process dies is run again at most this many times


def import_ray():
    try:
        import ray
    except ImportError:
        raise BackendError("--backend ray needs Ray, an optional extra: pip install -e .[ray]") from None
    return ray


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # and an empty SETTINGS
CONNECT_S = 5.0  # to connect to an address, and for it to answer as a Ray cluster does


def check_reachable(address: str) -> None:
    """Refuse at once an address where nothing answers, or where what answers is not a Ray cluster
    (Ray itself would retry the first for minutes and wait for the second for ever). A Ray head's
    GCS, and a Ray client server (ray://), speak gRPC: sent HTTP/2's preface, they answer with a
    SETTINGS frame at once; anything else does not."""
    import socket

    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise BackendError(f"--address must be 'auto', host:port or ray://host:port, got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_S) as sock:
            sock.sendall(HTTP2_PREFACE)
            head = b""
            while len(head) < 9:
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except TimeoutError:
        head = None
    except OSError as err:
        raise BackendError(
            f"no Ray cluster answers at {address} ({err.strerror or err}); start one (docs/cluster.md)"
        ) from None
    if head is None or len(head) < 9 or head[3] != 0x04:  # frame type 4: SETTINGS
        raise BackendError(
            f"what answers at {address} is not a Ray cluster (no gRPC answer within {CONNECT_S:g} s); "
            "give the head's GCS address (ray start --head prints it) or ray://host:10001 for a Ray client server"
        )


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
    _note_ray_node()
    return __version__, node_name()


def _check_versions(ray) -> list[str]:
    """digitcmp's version on every alive node that offers CPUs, against the driver's; returns the nodes."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_worker_version)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    refs = [
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote() for n in nodes
    ]
    answers = ray.get(refs, timeout=120)
    wrong = [f"{node} has {version}" for version, node in answers if version != __version__]
    if wrong:
        raise BackendError(
            f"workers must run the driver's digitcmp {__version__}, but {'; '.join(wrong)}: install the same version "
            "on every node (docs/cluster.md)"
        )
    return [node for _, node in answers]


def ray_results(
    fn, calls: list[tuple], address: str | None, device: str, gpus_per_task: float = 0.25, cpus: int | None = None
):
    """fn(*call) for each call as Ray tasks (fn importable by name on every node); yields each
    result as it finishes. address None starts a local Ray instance (with `cpus` CPUs, default
    all), 'auto' or 'ray://host:port' or 'host:port' joins a running cluster. However the caller
    stops, the tasks still in flight are cancelled and a Ray instance started here is shut down."""
    ray = import_ray()
    if device == "cuda" and not 0 < gpus_per_task <= 1:
        raise BackendError(f"--gpus-per-task must be in (0, 1], got {gpus_per_task}")
    started_here = not ray.is_initialized()
    local = started_here and address is None
    if local:
        from . import ray_watchdog

        before = ray_watchdog.descendants(os.getpid())  # what is ours and not Ray's (none of it is touched)
        watchdog = ray_watchdog.start(before)  # kills what Ray leaves if this process dies without cleaning up
    try:
        if started_here:
            options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            # Ray's start-up warnings (token authentication, ...) go to stderr: our output is our
            # lines; Ray's own logs stay in its session folder.
            ray_logger = logging.getLogger("ray")
            ray_level = ray_logger.level
            ray_logger.setLevel(logging.ERROR)
            try:
                # Ray's SIGTERM handler prints a stack dump and exits 1: ours says one line, 143.
                with interrupts.handlers_kept():
                    if address is None:
                        ray.init(num_cpus=cpus or usable_cores(), **options)
                    else:
                        if address != "auto":
                            check_reachable(address)
                        ray.init(address=address, **options)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise BackendError(f"cannot reach a Ray cluster at {address}: {' '.join(str(err).split())[:200]}") from None
            finally:
                ray_logger.setLevel(ray_level)
        _check_versions(ray)
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
    finally:
        if started_here:
            if local:
                started = ray_watchdog.new_descendants(os.getpid(), before)
            ray.shutdown()
            if local:
                ray_watchdog.kill_leftovers(started)  # the agents Ray leaves to stop by themselves later
                if watchdog is not None:
                    watchdog.kill()
                    watchdog.wait()
