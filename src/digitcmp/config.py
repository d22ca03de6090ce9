"""Run configuration: one frozen, validated dataclass that fully describes a training run.

A run is a function of (RunConfig, seed): the config hash (without the seed) plus the seed
identify it in the results store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace

from .data import check_pair_count
from .models import ModelOptions, get_architecture

OPTIMIZERS = ("sgd", "adam")
AUGMENTATIONS = ("none", "affine")

# Default learning rates, chosen on a validation split of the training pairs (800 train /
# 200 validation, seeds 100-102, never the test pairs) by `python benchmarks/tune_lr.py`;
# README "How the defaults were chosen" lists the grid and the validation errors.
DEFAULT_LR = {"sgd": 0.3, "adam": 0.01}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run except its seed."""

    arch: str = "siamese_cnn"
    """Architecture name in the registry (models.ARCHITECTURES)."""
    batch_norm: bool = True
    """Batch normalization after every hidden layer."""
    activation: str = "relu"
    """relu, leaky_relu or sigmoid."""
    hidden: int = 200
    """Width of the fully connected hidden layer."""
    channels: tuple[int, int] = (32, 64)
    """Output channels of the two convolutions."""
    comparison: str = "learned"
    """Digit-head models: 'learned' last layer or 'exact' P(d1 <= d2) from the posteriors."""
    dropout: float = 0.0
    """Dropout before each last fully connected layer."""
    tower: str = "lenet"
    """Convolutional trunk: 'lenet' (the study's) or 'deep' (three padded convs)."""
    optimizer: str = "sgd"
    """sgd or adam."""
    lr: float | None = None
    """Learning rate; None takes DEFAULT_LR of the optimizer (resolved on construction)."""
    momentum: float = 0.0
    """SGD momentum (the study used plain SGD)."""
    weight_decay: float = 0.0
    """L2 weight decay of the optimizer."""
    lr_schedule: str = "constant"
    """constant, or cosine (decay to 0 over the run)."""
    epochs: int = 25
    """Passes over the training pairs."""
    batch_size: int = 100
    """Pairs per optimization step."""
    pairs: int = 1000
    """Training pairs drawn from MNIST train."""
    test_pairs: int = 1000
    """Test pairs drawn from MNIST test."""
    recombine: bool = False
    """Each epoch, pair the 2 x pairs labelled training digits anew (a fresh random pairing, the
    targets known from the digit classes) instead of reusing the same pairs."""
    augment: str = "none"
    """Training-time augmentation of each digit: none, or affine (small random rotation, scale
    and translation)."""
    aux_weight: float = 0.0
    """Weight of the two digit-classification losses (the study's AUX rows use 1)."""
    label_smoothing: float = 0.0
    """Label smoothing of every cross-entropy term."""
    tta: int = 1
    """Views averaged when measuring the final errors: 1 = the image alone; n > 1 adds n - 1
    randomly shifted/rotated copies (test-time augmentation, from a generator seeded by the run)."""
    ensemble: int = 1
    """Models trained from different initializations on the same pairs, their probabilities
    averaged (reported apart from single models)."""
    validation: bool = False
    """Hold out the last 20 % of the training pairs and evaluate on them instead of the test
    pairs: the mode used to choose hyperparameters."""

    def __post_init__(self) -> None:
        get_architecture(self.arch)  # raises on an unknown name, listing the valid ones
        self.model_options()  # validates activation, comparison, widths, dropout
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.lr is None:
            object.__setattr__(self, "lr", DEFAULT_LR[self.optimizer])
        if isinstance(self.channels, list):
            object.__setattr__(self, "channels", tuple(self.channels))
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; valid: constant, cosine")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augment {self.augment!r}; valid: {', '.join(AUGMENTATIONS)}")
        for name in ("epochs", "batch_size", "pairs", "test_pairs", "tta", "ensemble"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}")
        if self.aux_weight < 0 or self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("aux_weight, momentum and weight_decay must be >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        check_pair_count("train", self.pairs)
        check_pair_count("test", self.test_pairs)
        if self.validation and self.pairs < 5:
            raise ValueError("validation mode needs at least 5 training pairs")

    def model_options(self) -> ModelOptions:
        """The subset of the config that shapes the model."""
        return ModelOptions(
            batch_norm=self.batch_norm,
            activation=self.activation,
            hidden=self.hidden,
            channels=tuple(self.channels),
            comparison=self.comparison,
            dropout=self.dropout,
            tower=self.tower,
        )

    @property
    def has_digit_logits(self) -> bool:
        return get_architecture(self.arch).has_digit_logits

    def to_dict(self) -> dict:
        """Plain JSON-able dict of every field."""
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Inverse of to_dict; unknown keys are a ValueError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown run-config field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**d)

    def config_hash(self) -> str:
        """Stable identity of the config (seed not included): 16 hex digits of a SHA-256."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes) -> RunConfig:
        """A copy with some fields changed (validated again)."""
        if "optimizer" in changes and "lr" not in changes:
            changes["lr"] = None  # a new optimizer takes its own default learning rate
        return replace(self, **changes)
