"""Results stores filled with made-up runs, for the tests of the report and of its page: every
study experiment's rows, seeds and per-epoch records, without training anything."""

from __future__ import annotations

import os

import numpy as np

from ..core.records import RunResult
from ..study.experiments import STUDY_EXPERIMENTS
from ..study.plan import expand
from ..study.store import Store, provenance


def synthetic_store(
    path: str | os.PathLike,
    seeds: int = 4,
    epochs: int | None = 3,
    command: str = "digitcmp reproduce (test)",
    host: str | None = None,
) -> Store:
    """A store at path holding one sweep of every study experiment, each run with a test error drawn
    uniformly from 5-30 % (a fixed generator) and `epochs` per-epoch records (two when epochs is
    None, the experiments' own epochs); command and host are stored as a sweep's would be."""
    store = Store(path)
    store.add_sweep(list(STUDY_EXPERIMENTS), seeds, epochs, command)
    rng = np.random.default_rng(0)
    for planned in expand(list(STUDY_EXPERIMENTS), seeds, epochs):
        error = float(rng.uniform(0.05, 0.3))
        records = [
            {
                "epoch": e + 1,
                "loss": 1.0 / (e + 1),
                "loss_main": 0.6 / (e + 1),
                "loss_aux": 0.4 / (e + 1),
                "train_error": 0.1,
                "test_error": error,
            }
            for e in range(epochs or 2)
        ]
        result = RunResult.from_dict(
            {
                "seed": planned.seed,
                "test_error": error,
                "train_error": error / 3,
                "train_seconds": 1.0,
                "epochs": records,
                "input_mean": 33.0,
                "input_std": 70.0,
            }
        )
        store.add_run(planned.experiment, planned.row, planned.config, result, provenance("cpu", "single", host=host))
    return store
