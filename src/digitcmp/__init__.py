"""digitcmp: classification, weight sharing and auxiliary losses on pairs of MNIST digits."""

__version__ = "0.1.0"
