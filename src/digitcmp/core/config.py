"""Run configuration: one frozen, validated dataclass that fully describes a training run.

A run is a function of (RunConfig, seed): the config hash (without the seed) plus the seed
identify it in the results store. Each field is typed once: the model's options in ModelOptions,
which RunConfig extends, the rest here; each with its default, its allowed values or
finite range (settings.setting) and its help text (the docstring under it). Validation, the
command line (cli.py) and checkpoint loading all read these declarations.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace

from .catalog import ACTIVATIONS, ARCHITECTURES, AUGMENTERS, COMPARISONS, TOWERS
from .settings import check_fields, setting

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "cosine")

# Default learning rates, chosen on validation pairs of MNIST training digits (seeds 100 and up,
# never the test pairs) by `digitcmp tune lr` (spaces.py); docs/tuning.md lists the grid and the
# validation errors, from the stored trials.
DEFAULT_LR = {"sgd": 0.3, "adam": 0.01}

# Bounds shared with the command line's other numbers (seeds, threads).
MAX_SEED = 2**31 - 1

SPLIT_SIZES = {"train": 60000, "test": 10000}  # MNIST's images per split


def check_pair_count(split: str, count: int, what: str | None = None) -> None:
    """A split can give at most half its size in pairs of distinct images; more is a ValueError."""
    limit = SPLIT_SIZES[split] // 2
    if count > limit:
        raise ValueError(
            f"{count} {what or split + ' pairs'} need {2 * count} distinct images but MNIST {split} has "
            f"{SPLIT_SIZES[split]}: at most {limit} pairs"
        )


@dataclass(frozen=True)
class ModelOptions:
    """Options every architecture accepts (those that do not apply to one are ignored by it),
    declared once: RunConfig extends this class."""

    batch_norm: bool = setting(True)
    """Batch normalization after every hidden layer."""
    activation: str = setting("relu", choices=ACTIVATIONS)
    """Hidden activation."""
    hidden: int = setting(200, low=1, high=4096)
    """Width of the fully connected hidden layer."""
    channels: tuple[int, int] = setting((32, 64), low=1, high=512)
    """Output channels of the two convolutions."""
    comparison: str = setting("learned", choices=COMPARISONS)
    """Digit-head models: 'learned' last layer or 'exact' P(d1 <= d2) from the posteriors."""
    dropout: float = setting(0.0, low=0.0, high=1.0, high_open=True)
    """Dropout before each last fully connected layer."""
    tower: str = setting("lenet", choices=TOWERS)
    """Convolutional trunk: 'lenet' (the study's) or 'deep' (three padded convs)."""

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class RunConfig(ModelOptions):
    """Everything that defines a training run except its seed: the model's options (ModelOptions,
    its base) and the data, training and scoring settings below."""

    arch: str = setting("siamese_cnn", choices=ARCHITECTURES)
    """Architecture name in the registry (catalog.ARCHITECTURES)."""
    optimizer: str = setting("sgd", choices=OPTIMIZERS)
    """Optimizer."""
    lr: float | None = setting(None, low=0.0, high=10.0, low_open=True, kind=float)
    """Learning rate; unset (None), the optimizer's default (DEFAULT_LR)."""
    momentum: float = setting(0.0, low=0.0, high=1.0, high_open=True)
    """SGD momentum (the study used plain SGD)."""
    weight_decay: float = setting(0.0, low=0.0, high=1.0)
    """L2 weight decay of the optimizer."""
    lr_schedule: str = setting("constant", choices=LR_SCHEDULES)
    """Learning-rate schedule: constant, or cosine (decay to 0 over the run)."""
    epochs: int = setting(25, low=1, high=10000)
    """Passes over the training pairs."""
    batch_size: int = setting(100, low=1, high=30000)
    """Pairs per optimization step."""
    pairs: int = setting(1000, low=1, high=30000)
    """Training pairs drawn from MNIST train."""
    test_pairs: int = setting(1000, low=1, high=5000)
    """Test pairs drawn from MNIST test."""
    recombine: bool = setting(False)
    """Each epoch, pair the 2 x pairs labelled training digits anew (a fresh random pairing, the
    targets known from the digit classes) instead of reusing the same pairs."""
    augment: str = setting("none", choices=AUGMENTERS)
    """Training-time augmentation of each digit: none, affine (small random rotation, scale and
    translation; affine_light and affine_strong: the same at half and 1.5 times the ranges), or
    robust (stronger affine and elastic distortion, stroke width, blur, faint ink and noise: what
    digits that are not MNIST's differ by), or mixed (half the digits each way)."""
    aux_weight: float = setting(0.0, low=0.0, high=100.0)
    """Weight of the two digit-classification losses (the study's AUX rows use 1)."""
    label_smoothing: float = setting(0.0, low=0.0, high=1.0, high_open=True)
    """Label smoothing of every cross-entropy term."""
    ema: float = setting(0.0, low=0.0, high=1.0, high_open=True, added=True)
    """Decay of an exponential moving average of the weights, updated after every step (0: none);
    with it, the averaged weights are the model that is scored and saved."""
    tta: int = setting(1, low=1, high=64)
    """Views averaged when measuring the final errors: 1 = the image alone; n > 1 adds n - 1
    randomly shifted/rotated copies (test-time augmentation, from a generator seeded by the run)."""
    ensemble: int = setting(1, low=1, high=20)
    """Models trained from different initializations on the same pairs, their probabilities
    averaged (reported apart from single models)."""
    validation: bool = setting(False)
    """Score on validation pairs instead of the test pairs: the mode used to choose
    hyperparameters. Training is unchanged (the same training pairs); the validation pairs are
    drawn from MNIST training digits that the training pairs do not use, a fixed draw per seed,
    and MNIST's test split is never opened."""
    validation_pairs: int = setting(10000, low=1, high=29999, added=True)
    """Validation pairs scored in validation mode (with pairs, at most 30000 pairs of distinct
    MNIST training digits in all)."""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.lr is None:
            object.__setattr__(self, "lr", DEFAULT_LR[self.optimizer])
        check_pair_count("train", self.pairs)
        check_pair_count("test", self.test_pairs)
        if self.validation:
            check_pair_count("train", self.pairs + self.validation_pairs, what="training and validation pairs")

    def model_options(self) -> ModelOptions:
        """The subset of the config that shapes the model (its ModelOptions fields)."""
        return ModelOptions(**{f.name: getattr(self, f.name) for f in fields(ModelOptions)})

    @property
    def has_digit_logits(self) -> bool:
        """Whether the architecture has digit heads (the auxiliary loss needs them)."""
        return ARCHITECTURES[self.arch].has_digit_logits

    def to_dict(self) -> dict:
        """Plain JSON-able dict of every field."""
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Inverse of to_dict; unknown keys are a ValueError naming them."""
        if not isinstance(d, dict):
            raise ValueError(f"a run config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown run-config field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**d)

    def config_hash(self) -> str:
        """Stable identity of the config (seed not included): 16 hex digits of a SHA-256."""
        identity = {
            f.name: value
            for f, value in zip(fields(self), self.to_dict().values())
            if not (f.metadata.get("added") and getattr(self, f.name) == f.default)
        }
        text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes: object) -> RunConfig:
        """A copy with some fields changed (validated again)."""
        if "optimizer" in changes and "lr" not in changes:
            changes["lr"] = None  # a new optimizer takes its own default learning rate
        return replace(self, **changes)
