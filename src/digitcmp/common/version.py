"""The package version, recorded with every stored run and checkpoint and checked on every Ray node."""

__version__ = "0.1.0"
