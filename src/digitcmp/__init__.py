"""digitcmp: classification, weight sharing and auxiliary losses on pairs of MNIST digits."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .common.version import __version__  # noqa: F401  (digitcmp.__version__)

if TYPE_CHECKING:
    from .app.predict import Predictor


def load_model(path: str | os.PathLike | None = None) -> Predictor:
    """Load a checkpoint written by `digitcmp train --save` (without a path: the model shipped in
    the package, docs/model_card.md); `.predict(inputs)` compares digits."""
    from .app.predict import load_model as _load_model

    return _load_model(path)
