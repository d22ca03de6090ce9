"""Where results go, checked before any training: a failed write should cost seconds, not a run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _probe(folder: Path) -> None:
    """Raise OSError unless a file can be created (and is removed again) in folder."""
    tempfile.NamedTemporaryFile(prefix=".digitcmp-probe-", dir=folder).close()


def check_folder(path: str | os.PathLike, what: str) -> None:
    """Create a destination folder (what: its name in messages) and check that files can be written in it."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OSError(f"{what} {path} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _probe(folder)
    except OSError as err:
        raise OSError(f"cannot write {what} {path}: {err.strerror or err}") from None


def check_file(path: str | os.PathLike) -> None:
    """Refuse a file destination that cannot be written: a folder, a missing or read-only parent
    folder. (The write itself is still checked when it happens.)"""
    target = Path(path)
    folder = target.absolute().parent
    if target.is_dir():
        raise OSError(f"cannot save to {path}: it is a folder; give a file name, e.g. {target / 'model.safetensors'}")
    if not folder.is_dir():
        raise OSError(f"cannot save to {path}: folder {folder} does not exist")
    try:
        _probe(folder)
    except OSError as err:
        raise OSError(f"cannot save to {path}: folder {folder} is not writable ({err.strerror})") from None
