"""What training returns, typed once: a run's result and its per-epoch records. The results store
derives its tables, checks and inserts from these declarations (study/store.py)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of one run. A loss that is not finite (a diverged training) is None once stored."""

    epoch: int  # from 1
    loss: float | None  # loss_main + aux_weight * loss_aux, the mean over the epoch's steps
    loss_main: float | None  # the comparison's cross-entropy
    loss_aux: float | None  # the two digit cross-entropies summed (0 without digit heads)
    train_error: float | None  # running error of the epoch's batches, in training mode
    test_error: float | None  # error on the test pairs after the epoch; None unless tracked, or in validation mode
    validation_error: float | None = None  # the same on the validation pairs, in validation mode (when tracked)


@dataclass(frozen=True)
class RunResult:
    """A finished run of one seed: errors after the last epoch in eval mode, with the config's
    test-time views (fractions), and what a checkpoint of its model needs."""

    seed: int
    test_error: float | None  # on the test pairs; None in validation mode, which never scores them
    train_error: float
    train_seconds: float  # training alone, shared equally among seeds trained together
    epochs: tuple[EpochRecord, ...]
    input_mean: float  # the training pairs' pixel statistics that standardize its inputs
    input_std: float
    members_test_error: tuple[float, ...] | None = None  # an ensemble's members, each alone
    validation_error: float | None = None  # on the validation pairs, in validation mode only
    members_validation_error: tuple[float, ...] | None = None

    @property
    def split(self) -> str:
        """The pairs the run was scored on: 'test', or 'validation' in validation mode."""
        return "test" if self.validation_error is None else "validation"

    @property
    def held_out_error(self) -> float:
        """The error on the pairs it was scored on (split): the test or the validation error."""
        return self.test_error if self.validation_error is None else self.validation_error

    @property
    def has_test_error_curve(self) -> bool:
        """Whether every epoch recorded its held-out error."""
        return all(e.test_error is not None for e in self.epochs)

    @classmethod
    def from_dict(cls, d: dict) -> RunResult:
        """Inverse of to_dict."""
        tuples = ("members_test_error", "members_validation_error")
        return cls(
            **{k: v for k, v in d.items() if k not in ("epochs", "test_error", *tuples)},
            test_error=d.get("test_error"),  # a validation run's dict has none
            **{k: tuple(d[k]) for k in tuples if d.get(k) is not None},
            epochs=tuple(EpochRecord(**{"test_error": None, **e}) for e in d["epochs"]),
        )

    def to_dict(self) -> dict:
        """Plain JSON-able dict (an ensemble's members only for an ensemble; the validation fields
        only in validation mode)."""
        out = asdict(self)
        for key in ("members_test_error", "members_validation_error", "validation_error"):
            if out[key] is None:
                del out[key]
            elif key.startswith("members"):
                out[key] = list(out[key])
        out["epochs"] = [asdict(e) for e in self.epochs]
        if self.validation_error is not None:
            del out["test_error"]
            for epoch in out["epochs"]:
                del epoch["test_error"]
        else:
            for epoch in out["epochs"]:
                del epoch["validation_error"]
        return out

    def as_validation(self) -> RunResult:
        """The same run named for what it was scored on in validation mode: the evaluation pairs'
        errors (fit's test_error fields) are validation errors."""
        return replace(
            self,
            test_error=None,
            validation_error=self.test_error,
            members_test_error=None,
            members_validation_error=self.members_test_error,
            epochs=tuple(
                replace(
                    e, test_error=None, validation_error=e.test_error if e.validation_error is None else e.validation_error
                )
                for e in self.epochs
            ),
        )


def recorded_errors(metadata: dict) -> dict[str, float]:
    """The final errors a checkpoint's metadata records (test_error or validation_error, and
    train_error), those that are finite numbers: metadata is text from a file, and a checkpoint
    saved without them has 'None'. (Read alike from a checkpoint and from the ONNX graph exported
    from it.) A checkpoint of a validation run saved before the two were told apart recorded its
    validation error as test_error: it is read as the validation error it is."""
    errors = {}
    for key in ("test_error", "validation_error", "train_error"):
        try:
            value = float(metadata.get(key))
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            errors[key] = value
    if "test_error" in errors and "validation_error" not in errors and _validation_config(metadata):
        errors["validation_error"] = errors.pop("test_error")
    return errors


def _validation_config(metadata: dict) -> bool:
    try:
        config = json.loads(metadata.get("config") or "{}")
    except (TypeError, ValueError):
        return False
    return isinstance(config, dict) and config.get("validation") is True
