"""How a space's trials are chosen, as registry entries: a seeded TPE sampler with a median pruner,
or a grid whose every point is queued once, in order, unpruned. Optuna is imported here, once, for
the whole tune package (the optional extra: `pip install -e '.[tune]'`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from ..common.registry import Registry

PROGRESS_STEPS = 100  # pruning steps are the percent of a run's training done


class TuneError(ValueError):
    """A bad storage, space or setting for `digitcmp tune`."""


def import_optuna() -> ModuleType:
    """Optuna, quiet, or a TuneError naming the extra to install."""
    try:
        import optuna
    except ImportError:
        raise TuneError("digitcmp tune needs the tune extra (optuna is missing): pip install -e '.[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed or interrupted trial is our one line, not a log
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


@dataclass(frozen=True)
class Sampler:
    """A registry entry: Optuna's sampler and pruner for a study, and whether its trials are the
    queued points of a grid (every value fixed in advance, so the sampler is never asked)."""

    grid: bool
    sampler: Callable[[int], object]  # seed -> optuna sampler
    pruner: Callable[[], object]
    description: str


def _tpe(seed: int):
    # constant_liar: trials running in other workers count as tried, so workers do not propose the same point
    return import_optuna().samplers.TPESampler(seed=seed, constant_liar=True)


def _median_pruner():
    # A trial stops when its tracked validation error, half-way or later, is worse than the median
    # of the trials before it at the same share of training.
    return import_optuna().pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=PROGRESS_STEPS // 2)


SAMPLERS: Registry = Registry(
    "sampler",
    {
        "tpe": Sampler(False, _tpe, _median_pruner, "seeded TPE, median pruner on the tracked validation error"),
        "grid": Sampler(
            True,
            lambda seed: import_optuna().samplers.RandomSampler(seed=seed),  # never asked: every point is queued
            lambda: import_optuna().pruners.NopPruner(),
            "every point of the grid once, in the grid's order, unpruned",
        ),
    },
)
