"""The one seam between work and where it runs. An Executor takes a function importable by name
and its calls, runs them, and yields each result as it finishes: in this process, in local worker
processes (local.py), or as Ray tasks (ray_backend.py). Sweeps (sweep.py) and tuning
(tune/search.py) both go through make_executor."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

BACKENDS = ("local", "ray")


class Executor(Protocol):
    def results(self, fn: Callable, calls: list[tuple]) -> Iterator: ...


class InProcess:
    """The calls one after another in this process."""

    def results(self, fn, calls):
        for call in calls:
            yield fn(*call)


@dataclass(frozen=True)
class LocalProcesses:
    """A pool of `jobs` worker processes on this machine."""

    jobs: int
    data_dir: object = None

    def results(self, fn, calls):
        from .local import worker_results

        yield from worker_results(fn, calls, self.jobs, self.data_dir)


@dataclass(frozen=True)
class RayTasks:
    """Ray tasks on the cluster at `address`, or on a Ray instance started here with `cpus` CPUs."""

    address: str | None
    device: str
    cpus: int | None = None
    gpus_per_task: float = 0.25

    def results(self, fn, calls):
        from .ray_backend import ray_results

        yield from ray_results(fn, calls, self.address, self.device, self.gpus_per_task, self.cpus)


def make_executor(
    backend: str, jobs: int, address: str | None = None, device: str = "cpu", data_dir=None, gpus_per_task: float = 0.25
) -> Executor:
    """The executor of a backend: 'local' (this process for one job, else `jobs` worker processes)
    or 'ray' (`jobs` CPUs for a Ray instance started here)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "ray":
        return RayTasks(address, device, jobs, gpus_per_task)
    return InProcess() if jobs <= 1 else LocalProcesses(jobs, data_dir)
