"""The unit of work of a sweep: a task trains one run, or the missing seeds of one config batched
(engine.pays_to_batch), and returns each run's Outcome to the process that stores it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..common.host import cpu_model, node_name
from ..core.catalog import ARCHITECTURES
from ..core.config import RunConfig
from ..core.records import RunResult
from ..study.plan import PlannedRun


@dataclass(frozen=True)
class Task:
    """Runs of one config trained together (batched) or a single run."""

    runs: tuple[PlannedRun, ...]
    batched: bool


ENGINES = ("auto", "single", "batched")


def plan_tasks(
    missing: list[PlannedRun],
    device_type: str,
    engine: str = "auto",
    stored: dict[str, set[str]] | None = None,
    resolve: bool = True,
) -> list[Task]:
    """Group the missing runs into tasks: engine 'auto' batches the seeds of a config where that
    pays, 'batched' wherever it is exact (no dropout, no ensemble), 'single' never. stored: the
    engine families of each config's runs already in the store; a config's missing seeds are
    trained with its stored runs' engine, so that a store never mixes the two (an engine asked
    for that differs is a ValueError). resolve False: the device is the workers' to resolve (a
    cluster whose head has no GPU): 'cuda' plans by the GPU's rule without asking for one here,
    'auto' by the CPU's."""
    from ..core.engine import pays_to_batch, supports_batching
    from ..core.train import resolve_device

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    if resolve:
        dev = resolve_device(device_type)
    else:
        import torch

        dev = torch.device("cuda" if device_type == "cuda" else "cpu")
    batch = {"auto": lambda c: pays_to_batch(c, dev), "batched": supports_batching, "single": lambda c: False}[engine]
    by_config: dict[str, list[PlannedRun]] = {}
    for run in missing:
        by_config.setdefault(run.config.config_hash(), []).append(run)
    tasks = []
    for config_hash, runs in by_config.items():
        families = (stored or {}).get(config_hash, set())
        if len(families) == 1:  # (a store of older versions may hold both: then the usual rule)
            (family,) = families
            if engine != "auto" and engine != family:
                raise ValueError(
                    f"the store holds runs of {runs[0].experiment} / {runs[0].row} trained by the {family} "
                    f"engine, and --engine {engine} would mix the two in one row (they differ in the last "
                    f"digits); resume with --engine {family} (or auto), or use another --db"
                )
            batched = family == "batched"
        else:
            batched = len(runs) > 1 and batch(runs[0].config)
        if batched:
            tasks.append(Task(tuple(runs), batched=True))
        else:
            tasks.extend(Task((run,), batched=False) for run in runs)
    # Longest first keeps the workers busy to the end.
    return sorted(tasks, key=lambda t: -estimated_cost(t.runs[0].config) * len(t.runs))


def estimated_cost(config: RunConfig) -> float:
    """Relative training time of one run: per-epoch cost of the architecture, times epochs,
    training pairs and ensemble members (a 100-epoch run on 5000 pairs is ~20x a study run)."""
    return ARCHITECTURES[config.arch].cost * config.epochs * config.pairs / 1000 * config.ensemble


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


def checkpoint_path(folder: str | os.PathLike, run: PlannedRun) -> Path:
    """Where `reproduce --checkpoints DIR` keeps a run's weights."""
    return Path(folder) / f"{run.experiment}-{run.config.config_hash()}-seed{run.seed}.safetensors"


@dataclass(frozen=True)
class Outcome:
    """A finished run, as a worker returns it to the process that stores it."""

    run: PlannedRun
    result: RunResult
    device: str
    engine: str
    node: str
    """The machine (and, under Ray, the node) that trained it."""
    cpu: str
    """Its CPU's model, and the instruction sets its kernels ran (perf.instruction_set)."""
    isa: str
    versions: tuple[str, str, str | None]
    """digitcmp's version, torch's and the git commit, on the node that trained it."""


def node_versions() -> tuple[str, str, str | None]:
    """What this process trains with: digitcmp's version, torch's, and its source's git commit."""
    import torch

    from ..common.version import __version__
    from ..study.store import git_commit

    return __version__, torch.__version__, git_commit()


def run_task(
    task: Task, device: str, data_dir: str | os.PathLike | None, checkpoints: str | os.PathLike | None = None
) -> list[Outcome]:
    """Train a task; returns an Outcome per run. With a checkpoints folder, each run's model is
    saved there (an ensemble with all its members)."""
    from ..core.checkpoint import save_checkpoint
    from ..core.engine import train_seeds
    from ..core.perf import instruction_set
    from ..core.train import resolve_device, train_run

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
        outcomes = [
            Outcome(run, result, _device_name(dev), engine, node_name(), cpu_model(), instruction_set(), node_versions())
            for run, result in zip(task.runs, results)
        ]
    else:
        (run,) = task.runs
        result, model, _ = train_run(
            run.config, run.seed, device=device, data_dir=data_dir, track_errors=run.test_error_curve
        )
        outcomes = [
            Outcome(run, result, _device_name(dev), "single", node_name(), cpu_model(), instruction_set(), node_versions())
        ]
        states = [model.state_dict()]
    if checkpoints is not None:
        for o, state in zip(outcomes, states):
            r = o.result
            save_checkpoint(checkpoint_path(checkpoints, o.run), state, o.run.config, r.input_mean, r.input_std, r)
    return outcomes
