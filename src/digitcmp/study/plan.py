"""A sweep's plan: the declared experiments (experiments.py) turned into the runs they need, each
(config, seed) once, with the first row that asked for it."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..core.config import RunConfig
from .experiments import DEFAULT_SEEDS, Experiment, get_experiment


@dataclass(frozen=True)
class PlannedRun:
    """One (config, seed) of a sweep, with the first experiment row that asked for it."""

    experiment: str
    row: str
    config: RunConfig
    seed: int
    test_error_curve: bool = True
    """Measure and store the test error after every epoch (a figure of the sweep draws it)."""


def seeds_for(experiment: Experiment, seeds: int | None) -> int:
    """Seeds per row: the sweep's number when given, else the experiment's own default."""
    return seeds or experiment.seeds or DEFAULT_SEEDS


def expand(names: list[str], seeds: int | None = None, epochs: int | None = None) -> list[PlannedRun]:
    """Every (config, seed) the named experiments need, each once, in declaration order."""
    protocol = {} if epochs is None else {"epochs": epochs}
    planned: dict[tuple[str, int], PlannedRun] = {}
    for name in names:
        experiment = get_experiment(name)
        for row in experiment.rows:
            config = experiment.config(row, **protocol)
            for seed in range(seeds_for(experiment, seeds)):
                key = (config.config_hash(), seed)
                first = planned.setdefault(key, PlannedRun(name, row.name, config, seed, experiment.test_error_curves))
                if experiment.test_error_curves and not first.test_error_curve:  # a later experiment draws its curve
                    planned[key] = replace(first, test_error_curve=True)
    return list(planned.values())
