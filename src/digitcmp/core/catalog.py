"""What a run config can name, each declared once and readable without torch: the architectures,
the convolutional towers, the activations, the comparisons of digit-head models and the training
augmentations.

An entry says everything the rest of the package needs to know about its name (what it is, what
it outputs, what it costs to schedule) and where its code is: `build` is the callable itself, or
"module:attribute" when the code needs torch, so that the command line, the configs and `digitcmp
list` read the catalog without importing it. Declaring an architecture of one's own is one entry:

    ARCHITECTURES.register("my_net", Architecture("my_package.nets:MyNet", True, "my net"))
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..common.registry import Registry


def resolve(build: str | Callable | None) -> Any:
    """An entry's code: the callable itself, or the attribute named by "module:attribute"."""
    if not isinstance(build, str):
        return build
    module, _, attribute = build.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Architecture:
    """A model, built from ModelOptions, under models.py's contract."""

    build: str | Callable
    """ModelOptions -> nn.Module (or where to find it: "module:attribute")."""
    has_digit_logits: bool
    """Whether it returns digit logits beside the comparison (the auxiliary losses need them)."""
    description: str
    cost: float = 8.0
    """Relative training time per epoch on 1000 pairs (the scheduler runs the longest first)."""
    batches_seeds_on_cpu: bool = False
    """Whether training several seeds at once (engine.py) was measured faster on a CPU; on a GPU
    it is for every architecture."""

    def builder(self) -> Callable:
        """The function that builds the architecture, imported on first use."""
        return resolve(self.build)


@dataclass(frozen=True)
class Tower:
    """A convolutional trunk: [B, in, 14, 14] -> [B, channels[1] * cells]."""

    build: str | Callable
    """(in_channels, ModelOptions) -> nn.Sequential (or "module:attribute")."""
    cells: int
    """Spatial positions the trunk leaves."""
    description: str

    def builder(self) -> Callable:
        """The function that builds the tower, imported on first use."""
        return resolve(self.build)


@dataclass(frozen=True)
class Augmentation:
    """A training-time augmentation: (raw pairs, generator) -> raw pairs; None: none."""

    build: str | Callable | None
    description: str

    def function(self) -> Callable | None:
        """The augmentation (batch, generator) -> batch, or None for none."""
        return resolve(self.build)


_MODELS = "digitcmp.core.models"
_AUGMENT = "digitcmp.core.augment"

ARCHITECTURES: Registry = Registry(
    "architecture",
    {
        "fnn": Architecture(f"{_MODELS}:FNN", False, "fully connected: 392 -> hidden -> 2", 1, True),
        "cnn": Architecture(f"{_MODELS}:CNN", False, "LeNet-like CNN on the two-channel pair", 4),
        "split_cnn": Architecture(
            f"{_MODELS}:split_cnn", True, "one CNN tower per digit (10 classes each), then a comparison layer", 8
        ),
        "siamese_cnn": Architecture(
            f"{_MODELS}:siamese_cnn", True, "as split_cnn, but both digits share one tower (weight sharing)", 8
        ),
    },
)

TOWERS: Registry = Registry(
    "tower",
    {
        "lenet": Tower(f"{_MODELS}:lenet_trunk", 4, "the study's two convs"),
        "deep": Tower(f"{_MODELS}:deep_trunk", 9, "three padded convs"),
    },
)

# Hidden activations: the torch module each name builds.
ACTIVATIONS: Registry = Registry(
    "activation", {"relu": "torch.nn:ReLU", "leaky_relu": "torch.nn:LeakyReLU", "sigmoid": "torch.nn:Sigmoid"}
)

# How a digit-head model compares its two digits: a learned last layer, or P(d1 <= d2) exactly
# from the two posteriors.
COMPARISONS = ("learned", "exact")

AUGMENTERS: Registry = Registry(
    "augmentation",
    {
        "none": Augmentation(None, "none"),
        "affine": Augmentation(f"{_AUGMENT}:affine_augment", "small random rotation, scale and translation"),
        "affine_light": Augmentation(f"{_AUGMENT}:affine_light", "affine at half the ranges"),
        "affine_strong": Augmentation(f"{_AUGMENT}:affine_strong", "affine at 1.5 times the ranges"),
        "robust": Augmentation(
            f"{_AUGMENT}:robust_augment",
            "stronger affine and elastic distortion, stroke width, blur, faint ink and noise",
        ),
        "mixed": Augmentation(f"{_AUGMENT}:mixed_augment", "half the digits affine, half robust"),
    },
)
