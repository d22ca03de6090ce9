"""digitcmp: classification, weight sharing and auxiliary losses on pairs of MNIST digits."""

from .common.version import __version__  # noqa: F401  (digitcmp.__version__)


def load_model(path=None):
    """Load a checkpoint written by `digitcmp train --save` (without a path: the model shipped in
    the package, docs/model_card.md); `.predict(inputs)` compares digits."""
    from .app.predict import load_model as _load_model

    return _load_model(path)
