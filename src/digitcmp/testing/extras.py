"""The optional packages a test needs (the ray, serve and tune extras, Playwright, Schemathesis):
where a developer has not installed one, the test is skipped; under CI (`.ci/run` installs every
extra and sets CI) a missing one is an import error that fails the test, so CI never silently
tests less."""

import importlib
import os
from types import ModuleType

import pytest


def require(name: str) -> ModuleType:
    """The module `name`, imported; outside CI, the calling test (or module) skipped without it."""
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name)
