"""What training returns, typed once: a run's result and its per-epoch records. The results store
derives its tables, checks and inserts from these declarations (study/store.py)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of one run. A loss that is not finite (a diverged training) is None once stored."""

    epoch: int  # from 1
    loss: float | None  # loss_main + aux_weight * loss_aux, the mean over the epoch's steps
    loss_main: float | None  # the comparison's cross-entropy
    loss_aux: float | None  # the two digit cross-entropies summed (0 without digit heads)
    train_error: float | None  # running error of the epoch's batches, in training mode
    test_error: float | None  # error on the evaluation pairs after the epoch; None unless tracked


@dataclass(frozen=True)
class RunResult:
    """A finished run of one seed: errors after the last epoch in eval mode, with the config's
    test-time views (fractions), and what a checkpoint of its model needs."""

    seed: int
    test_error: float  # on the test pairs, or on the validation pairs in validation mode
    train_error: float
    train_seconds: float  # training alone, shared equally among seeds trained together
    epochs: tuple[EpochRecord, ...]
    input_mean: float  # the training pairs' pixel statistics that standardize its inputs
    input_std: float
    members_test_error: tuple[float, ...] | None = None  # an ensemble's members, each alone

    @property
    def has_test_error_curve(self) -> bool:
        return all(e.test_error is not None for e in self.epochs)

    @classmethod
    def from_dict(cls, d: dict) -> RunResult:
        """Inverse of to_dict."""
        members = d.get("members_test_error")
        return cls(
            **{k: v for k, v in d.items() if k not in ("epochs", "members_test_error")},
            epochs=tuple(EpochRecord(**e) for e in d["epochs"]),
            members_test_error=None if members is None else tuple(members),
        )

    def to_dict(self) -> dict:
        """Plain JSON-able dict (an ensemble's members only for an ensemble)."""
        out = asdict(self)
        if self.members_test_error is None:
            del out["members_test_error"]
        else:
            out["members_test_error"] = list(self.members_test_error)
        out["epochs"] = [asdict(e) for e in self.epochs]
        return out


def recorded_errors(metadata: dict) -> dict[str, float]:
    """The final errors a checkpoint's metadata records (test_error, train_error), those that are
    finite numbers: metadata is text from a file, and a checkpoint saved without them has 'None'.
    (Read alike from a checkpoint and from the ONNX graph exported from it.)"""
    errors = {}
    for key in ("test_error", "train_error"):
        try:
            value = float(metadata.get(key))
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            errors[key] = value
    return errors
