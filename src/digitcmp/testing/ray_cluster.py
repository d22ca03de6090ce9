"""Ray instances that a test starts and stops itself, never anyone else's: `ray stop --force` ends
every Ray process of every user on the host (an external cluster, and every sweep on it), so tests
end only the processes they started, by PID, found by what only their own instance has: its temp
folder (and its GCS port), and what runs below those processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from digitcmp.testing.processes import scaled_wait

RAY_MARKS = ("raylet", "gcs_server", "ray::", "dashboard/agent.py", "runtime_env/agent", "ray/_private/",
             "default_worker.py", "log_monitor.py", "monitor.py")  # fmt: skip


def ray_processes() -> dict[int, str]:
    """Every process of any Ray instance on this machine: pid -> command line (from /proc)."""
    found = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline") as f:
                    cmdline = f.read().replace("\0", " ")
            except OSError:
                continue
            if any(mark in cmdline for mark in RAY_MARKS):
                found[int(pid)] = cmdline
    return found


def end_processes(pids: Iterable[int], grace_s: float = 5.0) -> None:
    """SIGTERM to each pid, then SIGKILL to those still there after grace_s."""
    pids = set(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pids and time.monotonic() < deadline:
        pids = {pid for pid in pids if os.path.exists(f"/proc/{pid}")}
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def processes_of(temp_dir: str) -> dict[int, str]:
    """The Ray processes of the instance whose temp folder is temp_dir, pid -> command line: those
    that name it and every Ray process below them (a task's worker, whose command line Ray replaces
    by the task's name, runs below its node's raylet)."""
    from digitcmp.run.ray_watchdog import descendants

    everything = ray_processes()
    named = {pid for pid, cmd in everything.items() if temp_dir in cmd}
    ours = named | set(descendants(*named))
    return {pid: cmd for pid, cmd in everything.items() if pid in ours}


def end_process_trees(pids: Iterable[int], grace_s: float = 5.0) -> None:
    """end_processes for the pids and every process below them (a raylet's workers, say)."""
    from digitcmp.run.ray_watchdog import descendants

    pids = set(pids)
    end_processes(pids | set(descendants(*pids)), grace_s)


@contextlib.contextmanager
def only_ours() -> Iterator[str]:
    """Around a test that starts Ray instances of its own (ray.init in this process or a child):
    they are made in a temp folder of the test's own (RAY_TMPDIR, which children inherit; yielded,
    for processes_of), and afterwards the processes that name it, with what runs below them, are
    ended, and only those: never another Ray instance on the machine, not even one started while
    the test ran."""
    temp = tempfile.mkdtemp(prefix="dcr-", dir="/tmp")  # short: Ray's socket paths live under it
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp
    try:
        yield temp
    finally:
        with contextlib.suppress(Exception):
            import ray

            if ray.is_initialized():
                ray.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        end_process_trees(pid for pid, cmd in ray_processes().items() if temp in cmd)
        shutil.rmtree(temp, ignore_errors=True)


def free_port() -> int:
    """A loopback port free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class LocalCluster:
    address: str  # HOST:PORT, for --address
    temp_dir: str  # its own; every process of the cluster names it

    def processes(self) -> set[int]:
        """The processes of this cluster now."""
        port = self.address.rsplit(":", 1)[1]
        return {pid for pid, cmd in ray_processes().items() if self.temp_dir in cmd or f"127.0.0.1:{port}" in cmd}

    def head_processes(self) -> set[int]:
        """The head node's GCS and raylet (a worker node's raylet socket has a numbered suffix):
        ending them is the head lost, as `ray stop` on the head machine would."""
        return {
            pid
            for pid, cmd in ray_processes().items()
            if self.temp_dir in cmd and ("gcs_server" in cmd or "/sockets/raylet " in cmd)
        }


@contextlib.contextmanager
def local_cluster(workers: int = 1, cpus: int = 1, timeout_s: float = 180.0) -> Iterator[LocalCluster]:
    """A Ray cluster on loopback: a head and `workers` worker nodes (`ray start`), each with `cpus`
    CPUs, in a temp folder of its own; yields it (a LocalCluster). Afterwards every process of it,
    and only of it, is ended."""
    port = free_port()
    # Short: Ray's socket paths live under it, and a socket path has at most 107 characters.
    temp = tempfile.mkdtemp(prefix="dcr-", dir="/tmp")
    start = [sys.executable, "-m", "ray.scripts.scripts", "start", "--num-cpus", str(cpus), "--disable-usage-stats"]
    # Token auth off unless the caller set it: a token file that another Ray left in ~/.ray would
    # otherwise be taken by the head alone, and its workers refused.
    env = {"RAY_AUTH_MODE": "disabled", **os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    before = set(ray_processes())
    cluster = LocalCluster(f"127.0.0.1:{port}", temp)
    try:
        head = [*start, "--head", "--port", str(port), "--include-dashboard=false", "--node-ip-address", "127.0.0.1",
                "--temp-dir", temp]  # fmt: skip
        out = subprocess.run(head, capture_output=True, text=True, timeout=scaled_wait(timeout_s), env=env)
        if out.returncode != 0:
            raise RuntimeError(f"ray start --head failed: {out.stderr[-2000:]}")
        for _ in range(workers):
            worker = [*start, "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1", "--temp-dir", temp]
            out = subprocess.run(worker, capture_output=True, text=True, timeout=scaled_wait(timeout_s), env=env)
            if out.returncode != 0:
                raise RuntimeError(f"ray start --address failed: {out.stderr[-2000:]}")
        yield cluster
    finally:
        # Ours: every process that names our temp folder (a node's raylet, its workers and agents, the
        # worker nodes too: they take the head's) or our GCS port, with what runs below them; never one
        # that was there before.
        end_process_trees(cluster.processes() - before)
        shutil.rmtree(temp, ignore_errors=True)
