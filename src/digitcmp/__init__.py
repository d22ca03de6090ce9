"""digitcmp: classification, weight sharing and auxiliary losses on pairs of MNIST digits."""

__version__ = "0.1.0"


def load_model(path=None):
    """Load a checkpoint written by `digitcmp train --save` (without a path: the model shipped in
    the package, docs/model_card.md); `.predict(inputs)` compares digits."""
    from .predict import load_model as _load_model

    return _load_model(path)
