"""The files that ship inside the package, checked by their SHA-256 before they are used: a copy
damaged on disk (or replaced) could load and still answer nonsense, every value finite."""

from __future__ import annotations

import hashlib
import os

# Written when a shipped file is rebuilt (docs/model_card.md says how); the tests check they match.
SHIPPED_SHA256 = {
    "deploy.safetensors": "a3b7399a2483713241d658d0cf6ca6fecb2de068d1517f1aed24b5d23cc45f7d",
    "digitness.safetensors": "cdcd46cfad8c7b2314e45864e950424eb7062df9dfc0855180c9a15210ce6745",
    # Their ONNX copies, which answering uses (digitcmp export --out src/digitcmp/app/shipped; deterministic)
    "deploy.onnx": "1773a9ed65795f9d1551320b22bdd7350f9fcfa570630ddcd2f5f51bd12c951c",
    "digitness.onnx": "2ea050ce39803a4636021747de0a61ef15e9ea080a96d9c3bf08da619ffdef4e",
}
REINSTALL = (
    "reinstall digitcmp (pip install --force-reinstall -e . in a checkout, after git checkout of src/digitcmp/app/shipped)"
)


class DamagedFileError(ValueError):
    """A shipped file whose contents are not the ones released."""


def sha256_of(path: str | os.PathLike) -> str:
    """A file's SHA-256, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_shipped(path: str | os.PathLike) -> None:
    """Refuse a shipped file whose SHA-256 is not the recorded one, in one line saying how to repair it."""
    name = os.path.basename(os.fspath(path))
    try:
        digest = sha256_of(path)
    except OSError as err:
        raise DamagedFileError(f"the shipped file {name} cannot be read ({err.strerror}); {REINSTALL}") from None
    if digest != SHIPPED_SHA256.get(name):
        raise DamagedFileError(f"the shipped file {name} is damaged (its SHA-256 is not the released one); {REINSTALL}")
