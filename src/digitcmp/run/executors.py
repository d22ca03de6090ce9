"""The one seam between work and where it runs. An Executor takes a function importable by name
and its calls, runs them, and yields each result as it finishes: in this process, in local worker
processes (local.py), or as Ray tasks (ray_backend.py). Sweeps (sweep.py) and tuning
(tune/search.py) both go through Execution.executor()."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

BACKENDS = ("local", "ray")


class Executor(Protocol):
    def results(self, fn: Callable, calls: list[tuple]) -> Iterator:
        """fn(*call) for each call, each result yielded as it finishes (in any order)."""
        ...


class InProcess:
    """The calls one after another in this process."""

    def results(self, fn: Callable, calls: list[tuple]) -> Iterator:
        for call in calls:
            yield fn(*call)


@dataclass(frozen=True)
class LocalProcesses:
    """A pool of `jobs` worker processes on this machine."""

    jobs: int
    data_dir: object = None

    def results(self, fn: Callable, calls: list[tuple]) -> Iterator:
        from .local import worker_results

        yield from worker_results(fn, calls, self.jobs, self.data_dir)


@dataclass(frozen=True)
class RayTasks:
    """Ray tasks on the cluster at `address`, or on a Ray instance started here with `cpus` CPUs."""

    address: str | None
    device: str
    cpus: int | None = None
    gpus_per_task: float = 0.25

    def results(self, fn: Callable, calls: list[tuple]) -> Iterator:
        from .ray_backend import ray_results

        yield from ray_results(fn, calls, self.address, self.device, self.gpus_per_task, self.cpus)


@dataclass(frozen=True)
class Execution:
    """Where and how a command's work runs, given once by the command (sweeps and tuning alike):
    the device each run trains on (resolved where it trains), the MNIST folder (None: the embedded
    data), the backend and, for Ray, the cluster's address (None: a Ray instance started here) and
    each run's share of a GPU; `jobs`: worker processes here, or the CPUs of a Ray instance
    started here."""

    device: str = "cpu"
    data_dir: str | os.PathLike | None = None
    backend: str = "local"
    address: str | None = None
    jobs: int = 1
    gpus_per_task: float = 0.25

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")

    def executor(self, tasks: int | None = None) -> Executor:
        """The executor of the backend: 'local' runs in this process for one job (or one task),
        else in `jobs` worker processes (no more than `tasks`); 'ray' as Ray tasks."""
        if self.backend == "ray":
            return RayTasks(self.address, self.device, self.jobs, self.gpus_per_task)
        jobs = self.jobs if tasks is None else min(self.jobs, tasks)
        return InProcess() if jobs <= 1 else LocalProcesses(jobs, self.data_dir)
