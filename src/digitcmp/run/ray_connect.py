"""Reaching a Ray cluster, or starting a Ray instance here, and what the user sees when that fails.

Every failure of the cluster is one line of ours, with what to do: an address where nothing answers
or something that is not Ray answers (refused within seconds: Ray would retry for minutes or wait
for ever), a cluster that wants a token this driver lacks, workers of another version, a head that
stops answering mid-sweep (noticed within seconds: Ray's own driver waits 60 s, then dies with its
C++ lines). Ray's own messages (its C++ log lines and the errors its driver prints, such as a worker's
death) go to a file in Ray's log folder, which our lines name, not to the terminal.

`connected()` is entered by the command before it writes anything (its store, its tuning storage),
so a cluster that cannot be reached leaves nothing behind; the sweep's tasks then run inside it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from ..common import interrupts
from ..common.host import node_name, note_node_detail, usable_cores
from ..common.version import __version__
from .errors import BackendError

CONNECT_S = 5.0  # to connect to an address, and for it to answer as a Ray cluster does
HEAD_LOST_S = 3.0  # a head that accepts no connection for this long is gone (Ray itself waits 60 s)
HEAD_POLL_S = 0.5
HEAD_LOST_EXIT = 1  # as any sweep that cannot go on: the runs stored so far are kept
AUTH_MARKS = ("Unauthenticated", "InvalidAuthToken", "token is missing or incorrect")
# An HTTP/2 client's opening bytes and an empty SETTINGS frame: a gRPC server (a Ray head's GCS, a
# Ray client server) answers them with a SETTINGS frame at once; nothing else does.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def import_ray() -> ModuleType:
    """Ray, or a BackendError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise BackendError("--backend ray needs Ray, an optional extra: pip install -e .[ray]") from None
    return ray


def _host_port(address: str) -> tuple[str, int]:
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise BackendError(f"--address must be 'auto', host:port or ray://host:port, got {address!r}")
    return host.strip("[]"), int(port)


def check_reachable(address: str) -> None:
    """Refuse at once an address where nothing answers, or where what answers is not a Ray cluster
    (Ray itself would retry the first for minutes and wait for the second for ever)."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_S) as sock:
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


class RayMessages:
    """Ray's own messages, out of the terminal: this process's file descriptor 2 (where Ray's C++
    core writes) goes to a file while Ray is in use, and so do the errors Ray's driver prints
    (print_to_stdstream, e.g. a worker's death: tens of lines). Our own lines still reach the
    terminal: sys.stderr is kept on the original descriptor."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self._saved_fd: int | None = None
        self._saved_stream = None
        self._saved_printer = None

    def start(self, path: Path) -> None:
        """Send Ray's messages (fd 2 and its printer) to path; ours keep their stream."""
        path.parent.mkdir(parents=True, exist_ok=True)
        sys.stderr.flush()
        self._saved_fd = os.dup(2)
        self._point_fd2_at(path)
        if _writes_to_fd(sys.stderr, 2):  # a terminal or a pipe: ours keep going there
            self._saved_stream = sys.stderr
            sys.stderr = open(os.dup(self._saved_fd), "w", buffering=1, errors="backslashreplace")  # noqa: SIM115

    def move_to(self, folder: Path) -> None:
        """Go on in `folder` (Ray's log folder, known once Ray is reached), with what was written so far."""
        if self.path is None or not folder.is_dir():
            return
        target = folder / f"digitcmp-driver-{os.getpid()}.err"
        earlier = self.path.read_bytes() if self.path.exists() else b""
        target.write_bytes(earlier)
        old = self.path
        self._point_fd2_at(target)
        old.unlink(missing_ok=True)

    def keep_ray_prints(self) -> None:
        """Ray's driver prints the errors of the cluster (a worker died, a task is retried) through
        print_to_stdstream to sys.stderr: those go to the file too."""
        import ray._private.worker as ray_worker  # Ray's own module: its printer is looked up by name at each call

        def to_file(data, ignore_prefix=False):
            with open(self.path, "a", errors="backslashreplace") as f:
                for line in data.get("lines", []):
                    f.write(f"({data.get('pid', 'ray')}) {line}\n")

        self._saved_printer = (ray_worker, ray_worker.print_to_stdstream)
        ray_worker.print_to_stdstream = to_file

    def stop(self) -> None:
        """Give fd 2 and Ray's printer back."""
        if self._saved_printer is not None:
            module, printer = self._saved_printer
            module.print_to_stdstream = printer
            self._saved_printer = None
        if self._saved_fd is None:
            return
        if self._saved_stream is not None:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = self._saved_stream
            self._saved_stream = None
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        self._saved_fd = None

    def _point_fd2_at(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)
        self.path = path

    def text(self) -> str:
        """What Ray wrote so far ('' when nothing can be read)."""
        try:
            return self.path.read_text(errors="replace") if self.path is not None else ""
        except OSError:
            return ""


def _writes_to_fd(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False


class HeadWatch:
    """A thread that checks, every HEAD_POLL_S, that the head's GCS still accepts connections; when
    it has not for HEAD_LOST_S, it says so in one line and ends the process (the main thread is
    inside Ray's wait, which would block for 60 s and then kill the process with Ray's lines). The
    store needs nothing more: each run was committed in its own transaction."""

    def __init__(self, gcs_address: str, messages: RayMessages) -> None:
        self.host, self.port = _host_port(gcs_address)
        self.address = gcs_address
        self.messages = messages
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="digitcmp-head-watch", daemon=True)

    def start(self) -> None:
        """Start watching the head."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the thread joined)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=HEAD_POLL_S):
                return True
        except OSError:
            return False

    def _watch(self) -> None:
        silent_since = None
        while not self._stop.wait(HEAD_POLL_S):
            if self._answers():
                silent_since = None
                continue
            silent_since = silent_since or time.monotonic()
            if time.monotonic() - silent_since >= HEAD_LOST_S and not self._stop.is_set():
                print(
                    f"digitcmp: error: the Ray head at {self.address} stopped answering (lost for {HEAD_LOST_S:g} s); "
                    "the runs stored so far are kept: start the cluster again, then run the same command to resume "
                    f"(Ray's messages: {self.messages.path})",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(HEAD_LOST_EXIT)


def note_ray_node() -> None:
    """Provenance names the Ray node a task ran on (host.node_name)."""
    import ray

    note_node_detail(f"ray node {ray.get_runtime_context().get_node_id()[:12]}")


def _worker_version():
    import torch

    note_ray_node()
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


def check_nodes(ray: ModuleType, device: str) -> None:
    """digitcmp's and torch's versions on every alive node that offers CPUs, against the driver's,
    and a GPU somewhere when the runs ask for one."""
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


def _auth_refused(messages: RayMessages, err: BaseException) -> bool:
    said = messages.text() + " " + str(err) + " " + str(err.__cause__ or "")
    return any(mark in said for mark in AUTH_MARKS)


def _init(ray, address: str | None, cpus: int | None, messages: RayMessages) -> None:
    options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_logger = logging.getLogger("ray")
    ray_level = ray_logger.level
    ray_logger.setLevel(logging.ERROR)  # Ray's start-up warnings are Ray's, not ours
    try:
        # Ray's SIGTERM handler prints a stack dump and exits 1: ours says one line, 143.
        with interrupts.handlers_kept():
            if address is None:
                ray.init(num_cpus=cpus or usable_cores(), **options)
            else:
                ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as err:
        if _auth_refused(messages, err):
            raise BackendError(
                f"the Ray cluster at {address} requires token authentication and refused this driver (no token, or "
                "not the cluster's): set RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, or the file "
                f"~/.ray/auth_token) where you run digitcmp (docs/cluster.md); Ray's messages: {messages.path}"
            ) from None
        raise BackendError(
            f"cannot reach a Ray cluster at {address}: {' '.join(str(err).split())[:200]} (Ray's messages: {messages.path})"
        ) from None
    finally:
        ray_logger.setLevel(ray_level)


def _gcs_address(ray) -> str | None:
    """The head's GCS address of the cluster this driver joined (None for a Ray client, ray://)."""
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:  # a Ray client's context has none
        return None


def _logs_folder() -> Path | None:
    try:
        import ray._private.worker as ray_worker

        return Path(ray_worker._global_node.get_logs_dir_path())
    except Exception:  # a Ray client has no node here
        return None


@contextlib.contextmanager
def connected(address: str | None, device: str = "cpu", cpus: int | None = None) -> Iterator[ModuleType]:
    """Ray, reached and checked, for the block: the cluster at `address` ('auto', host:port,
    ray://host:port) or, with None, a Ray instance started here with `cpus` CPUs (default all),
    shut down afterwards with everything it started, however the process ends. Checks every node's
    versions (and that some node has a GPU for device cuda). Yields the ray module. Already
    connected (the command connected before writing its store): the block runs in that connection."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address not in (None, "auto"):
        check_reachable(address)
    local = address is None
    if local:
        from . import ray_watchdog

        before = ray_watchdog.descendants(os.getpid())  # what is ours and not Ray's (none of it is touched)
        watchdog = ray_watchdog.start(before)  # kills what Ray leaves if this process dies without cleaning up
    messages = RayMessages()
    fd, first = tempfile.mkstemp(prefix="digitcmp-ray-", suffix=".log")
    os.close(fd)
    messages.start(Path(first))
    head_watch = None
    try:
        _init(ray, address, cpus, messages)
        try:
            messages.keep_ray_prints()
            folder = _logs_folder()
            if folder is not None:
                messages.move_to(folder)
            # A Ray client (ray://) reaches the head through its client server: the GCS address
            # the cluster reports may not be reachable from here, and the client notices a loss itself.
            if not local and not address.startswith("ray://") and (gcs := _gcs_address(ray)):
                head_watch = HeadWatch(gcs, messages)
                head_watch.start()
            check_nodes(ray, device)
            yield ray
        finally:
            if head_watch is not None:
                head_watch.stop()
            if local:
                started = ray_watchdog.new_descendants(os.getpid(), before)
            ray.shutdown()
            if local:
                ray_watchdog.kill_leftovers(started)  # the agents Ray leaves to stop by themselves later
    finally:
        messages.stop()
        if local and watchdog is not None:
            watchdog.kill()
            watchdog.wait()
