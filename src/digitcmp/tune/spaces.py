"""Search spaces for `digitcmp tune`, declared as data beside the experiments they choose for.

A space fixes some RunConfig fields (base), names the fields to search and their ranges (params),
and what a trial's error is: the mean validation error over its rows (configs averaged, as the
study's four architectures share one learning rate) and over K validation seeds. A space may hold
several studies (one per optimizer, say), each an Optuna study of its own with fields and ranges
of its own. Trials always run in validation mode: trained on a seed's 1000 training pairs and
scored on config.validation_pairs pairs of other MNIST training digits; no test pair is drawn.

To tune a new architecture, declare a space (see `best` below) and run `digitcmp tune NAME`:

    register_space(SearchSpace(
        name="my_arch",
        description="learning rate and width of my_arch",
        base=dict(arch="my_arch", optimizer="adam"),
        params={"lr": Floats(1e-4, 1e-1, log=True), "hidden": Ints(50, 500)},
    ))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..common.registry import Registry
from ..core.config import DEFAULT_LR, RunConfig
from ..study.experiments import PRESETS, TABLE5_ROW_LR, get_experiment
from .samplers import SAMPLERS

if TYPE_CHECKING:
    import optuna

# A field's value as a config holds it (a Choice of tuples is stored by Optuna as their text).
Value = float | int | str | bool | tuple


class Range(Protocol):
    """The values one field of a search space may take."""

    def suggest(self, trial: optuna.Trial, name: str) -> Value:
        """The trial's value of the field, drawn by its sampler (as a config holds it)."""
        ...

    def encode(self, value: Value) -> Value:
        """A config's value as Optuna stores it."""
        ...

    def decode(self, value: Value) -> Value:
        """A value Optuna stored, as a config holds it."""
        ...

    def values(self) -> list | None:
        """The grid's values (as Optuna stores them), or None for a range that is no grid."""
        ...


VALIDATION_SEED_BASE = 100  # validation seeds are 100, 101, ...: apart from the reported seeds 0-9
FINALIST_SEED_BASE = 200  # the fresh seeds finalists are re-scored on: 200, 201, ...


@dataclass(frozen=True)
class Floats:
    """A float field in [low, high], on a log scale if log."""

    low: float
    high: float
    log: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> Value:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def encode(self, value: Value) -> Value:
        return value  # as Optuna stores it

    def decode(self, value: Value) -> Value:
        return value

    def values(self) -> list | None:
        return None  # not a grid


@dataclass(frozen=True)
class Ints:
    """An integer field in [low, high] by step."""

    low: int
    high: int
    step: int = 1

    def suggest(self, trial: optuna.Trial, name: str) -> Value:
        return trial.suggest_int(name, self.low, self.high, step=self.step)

    def encode(self, value: Value) -> Value:
        return value

    def decode(self, value: Value) -> Value:
        return value

    def values(self) -> list | None:
        return None


@dataclass(frozen=True)
class Choice:
    """One of the values (numbers, strings, booleans, or tuples such as channels)."""

    options: tuple

    def labels(self) -> list:
        """The options as Optuna stores them: numbers, strings and booleans as they are, other values
        (tuples) by their text."""
        return [v if isinstance(v, (int, float, str, bool)) else str(v) for v in self.options]

    def suggest(self, trial: optuna.Trial, name: str) -> Value:
        label = trial.suggest_categorical(name, self.labels())
        return self.decode(label)

    def decode(self, label: Value) -> Value:
        return self.options[self.labels().index(label)]

    def encode(self, value: Value) -> Value:
        return self.labels()[self.options.index(value)]

    def values(self) -> list | None:
        return self.labels()


@dataclass(frozen=True)
class Study:
    """One Optuna study of a space: fields fixed for it and ranges of its own (added to, or
    replacing, the space's)."""

    fields: dict = field(default_factory=dict)
    params: dict[str, Range] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    base: dict = field(default_factory=dict)
    params: dict[str, Range] = field(default_factory=dict)
    studies: dict[str, Study] = field(default_factory=lambda: {"": Study()})
    rows: dict[str, dict] = field(default_factory=lambda: {"": {}})
    sampler: str = "tpe"  # "grid": every combination of Choice ranges once, queued in the grid's order
    trials: int = 40  # default --trials of a TPE study, in total (a rerun resumes up to it); a grid runs all its points
    seeds: int = 3  # default --seeds: validation seeds per trial (and fresh seeds per finalist)
    finalists: int = 3  # the best trials re-scored on fresh seeds before a choice (with the values in use)
    in_use: dict[str, dict] = field(default_factory=dict)  # per study: the values the code uses now
    # Per study: where a TPE search starts (its first trial, the baseline measured on the same
    # seeds); by default the values in use. A search that the code adopted keeps its own start.
    start: dict[str, dict] = field(default_factory=dict)

    @property
    def is_grid(self) -> bool:
        """Whether the space's sampler tries every point of a grid."""
        return SAMPLERS[self.sampler].grid

    def start_values(self, key: str) -> dict | None:
        """The values a TPE study of `key` starts from (its first trial), or None (a grid has no start)."""
        return None if self.is_grid else self.start.get(key, self.in_use.get(key))

    def study_name(self, key: str) -> str:
        """The Optuna study name of one of the space's studies."""
        return self.name if key == "" else f"{self.name}/{key}"

    def ranges(self, key: str) -> dict:
        """The searched fields of a study and their ranges."""
        return {**self.params, **self.studies[key].params}

    def grid(self, key: str) -> dict[str, list]:
        """The grid of a grid space: each searched field's values."""
        grid = {name: r.values() for name, r in self.ranges(key).items()}
        missing = [name for name, values in grid.items() if values is None]
        if missing:
            raise ValueError(f"space {self.name}: a grid needs Choice ranges; {', '.join(missing)} are not")
        return grid

    def configs(self, key: str, chosen: dict) -> dict[str, RunConfig]:
        """The validation configs of a trial with the chosen values, one per row."""
        fields = {**self.base, **self.studies[key].fields, **chosen}
        return {row: RunConfig(**{**fields, **extra, "validation": True}) for row, extra in self.rows.items()}


SPACES: Registry = Registry("search space")


def register_space(space: SearchSpace) -> SearchSpace:
    """Declare a space, every value it can try checked as a config now; returns it."""
    SAMPLERS[space.sampler]  # an unknown sampler is a ValueError listing the valid ones
    for key in space.studies:  # every fixed value and every range end is a valid config, checked now
        space.configs(key, {})
        for name, r in space.ranges(key).items():
            options = r.options if isinstance(r, Choice) else (r.low, r.high)
            for value in options:
                space.configs(key, {name: value})
    SPACES[space.name] = space
    return space


def get_space(name: str) -> SearchSpace:
    """The space of that name, or a ValueError listing the spaces."""
    return SPACES[name]


# The learning-rate grids of the study's tables, per optimizer.
LR_GRID = {"sgd": (0.01, 0.03, 0.1, 0.3, 0.6, 1.0), "adam": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)}
STUDY_ARCHITECTURES = {  # the rows of Tables 1-4, which share one rate per optimizer
    "fnn+bn": dict(arch="fnn"),
    "cnn+bn": dict(arch="cnn"),
    "split_cnn+aux": dict(arch="split_cnn", aux_weight=1.0),
    "siamese_cnn+aux": dict(arch="siamese_cnn", aux_weight=1.0),
}

register_space(
    SearchSpace(
        name="lr",
        description="One learning rate per optimizer for every row of Tables 1-5: the grid rate with the "
        "lowest mean validation error over the study's four architectures (config.DEFAULT_LR)",
        rows=STUDY_ARCHITECTURES,
        studies={opt: Study({"optimizer": opt}, {"lr": Choice(grid)}) for opt, grid in LR_GRID.items()},
        sampler="grid",
        seeds=3,
        in_use={opt: {"lr": DEFAULT_LR[opt]} for opt in LR_GRID},
    )
)


def _table5_studies() -> dict[str, Study]:
    table5 = get_experiment("table5")
    return {
        row.name: Study({**table5.base, **row.overrides}, {"lr": Choice(LR_GRID[row.overrides["optimizer"]])})
        for row in table5.rows
    }


register_space(
    SearchSpace(
        name="lr_table5",
        description="A learning rate for each Table 5 row on its own (experiments.TABLE5_ROW_LR, "
        "the table5_tuned experiment)",
        studies=_table5_studies(),
        sampler="grid",
        seeds=5,
        in_use={row: {"lr": lr} for row, lr in TABLE5_ROW_LR.items()},
    )
)
assert set(TABLE5_ROW_LR) == set(_table5_studies())

BEST_RANGES = {
    "lr": Floats(1e-3, 3e-2, log=True),
    "epochs": Choice((60, 100, 150)),
    "weight_decay": Choice((0.0, 1e-5, 1e-4, 5e-4)),
    "label_smoothing": Floats(0.0, 0.15),
    "dropout": Floats(0.0, 0.4),
    "channels": Choice(((32, 64), (48, 96), (64, 128))),
    "augment": Choice(("affine_light", "affine", "affine_strong")),
    "recombine": Choice((False, True)),
    "aux_weight": Floats(0.3, 3.0, log=True),
    "ema": Choice((0.0, 0.99, 0.995)),
}

register_space(
    SearchSpace(
        name="best",
        description="The best recipe's ingredients under the study's protocol (1000 training pairs), around "
        "PRESETS['hand_picked'] (the recipe before this search)",
        base=PRESETS["hand_picked"],
        params=BEST_RANGES,
        trials=31,  # the search's budget: about an hour on 2 cores with --jobs 2
        seeds=3,
        in_use={"": {name: getattr(RunConfig(**PRESETS["best"]), name) for name in BEST_RANGES}},
        start={"": {name: getattr(RunConfig(**PRESETS["hand_picked"]), name) for name in BEST_RANGES}},
    )
)
