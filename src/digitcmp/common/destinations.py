"""Where results go, checked before any work, and written so that nothing is half-written or replaced.

Every path a command writes goes through here: `--save`, `--out`, `--checkpoints`, `--db`, `--storage`,
`report --docs` and the files written inside those folders. The rules, one for all:
- the empty string is no path;
- a device, a FIFO or a socket is refused (writing a checkpoint into /dev/full or a pipe is never meant);
- a symlink is written *through*: its target gets the new content, the link stays a link;
- a file is written to a temporary file beside it and renamed over it, so a crash leaves the old one.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

_KINDS = {
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISFIFO: "a FIFO (named pipe)",
    stat.S_ISSOCK: "a socket",
}


def _kind(mode: int) -> str | None:
    """What a non-regular, non-folder file is, in words; None for a regular file or a folder."""
    for test, name in _KINDS.items():
        if test(mode):
            return name
    return None


def given_path(path: str | os.PathLike | None, what: str) -> Path:
    """path as a Path, or OSError when it is no path at all: empty, blank, or holding a NUL."""
    text = "" if path is None else str(os.fspath(path))
    if not text.strip():
        raise OSError(f"{what}: an empty path; give a file or folder name")
    if "\0" in text:
        raise OSError(f"{what}: a path cannot hold a NUL character")
    return Path(text)


def _probe(folder: Path) -> None:
    """Raise OSError unless a file can be created (and is removed again) in folder."""
    tempfile.NamedTemporaryFile(prefix=".digitcmp-probe-", dir=folder).close()


def missing_folders(folder: str | os.PathLike, what: str) -> list[Path]:
    """The folders (innermost first) that make_folders would create for folder; OSError, creating
    nothing, when something on the way is not a folder."""
    folder = Path(folder)
    missing = []
    for parent in [folder, *folder.parents]:
        if parent.is_dir():
            break
        if parent.exists() or parent.is_symlink():
            kind = _kind(parent.lstat().st_mode) or "a file"
            raise OSError(f"cannot create the folder of {what}: {parent} is {kind}, not a folder")
        missing.append(parent)
    return missing


def make_folders(folder: str | os.PathLike, what: str) -> list[Path]:
    """Create folder and its missing parents (every writing flag creates the folders it needs);
    returns those created, outermost first, for remove_created. what: whose folder, in messages."""
    missing = missing_folders(folder, what)
    created = []
    for parent in reversed(missing):
        try:
            parent.mkdir()
        except FileExistsError:  # made meanwhile by another process: theirs, not ours to remove
            continue
        except OSError as err:
            remove_created([], created)
            raise OSError(f"cannot create folder {parent} for {what}: {err.strerror or err}") from None
        created.append(parent)
    return created


@contextmanager
def folders_made(folder: str | os.PathLike, what: str) -> Iterator[list[Path]]:
    """make_folders for the block: the folders it made (yielded) are removed again, while empty, if
    the block fails, so a failed command leaves no folder of its own behind."""
    created = make_folders(folder, what)
    try:
        yield created
    except BaseException:
        remove_created([], created)
        raise


def remove_created(files: list[Path], folders: list[Path]) -> None:
    """Undo what a failed command created: its files, then its folders (innermost first, and only
    while empty: what someone else put there stays)."""
    for file in files:
        Path(file).unlink(missing_ok=True)
    for folder in reversed(folders):
        try:
            Path(folder).rmdir()
        except OSError:
            break


def check_folder(path: str | os.PathLike, what: str, create: bool = True) -> Path:
    """Create a destination folder (what: its name in messages) and check that files can be written
    in it; create=False only refuses what is no folder (nothing is created)."""
    folder = given_path(path, what)
    if folder.exists() and not folder.is_dir():
        kind = _kind(folder.stat().st_mode) or "a file"
        raise OSError(f"{what} {path} is {kind}, not a folder")
    if not create:
        missing_folders(folder, f"{what} {path}")  # a file on the way is refused now, before anything is made
        return folder
    with folders_made(folder, f"{what} {path}"):
        try:
            _probe(folder)
        except OSError as err:
            raise OSError(f"cannot write {what} {path}: {err.strerror or err}") from None
    return folder


def check_kind(path: str | os.PathLike, what: str = "file") -> Path:
    """Refuse, without creating anything, a file destination that no folder can fix: the empty
    string, a folder, a device, a FIFO or a socket (through any symlinks). Returns the file a write
    lands in: a symlink's target, however many links deep (a dangling link's target is created)."""
    given = given_path(path, what)
    target = Path(os.path.realpath(given))
    if target.is_dir():
        raise OSError(f"cannot write {what} {path}: it is a folder; give the path of a file (in it or elsewhere)")
    if target.exists():
        kind = _kind(target.stat().st_mode)
        if kind:
            raise OSError(f"cannot write {what} {path}: it is {kind}; give a regular file (new or existing)")
    return target


def file_target(path: str | os.PathLike, what: str = "file") -> Path:
    """The regular file a write to path lands in, after check_kind and a check that its folder
    exists and is writable. Raises OSError with one line saying what is wrong and what is accepted."""
    target = check_kind(path, what)
    folder = target.parent
    if not folder.is_dir():
        raise OSError(f"cannot write {what} {path}: folder {folder} does not exist")
    try:
        _probe(folder)
    except OSError as err:
        raise OSError(f"cannot write {what} {path}: folder {folder} is not writable ({err.strerror})") from None
    return target


@cache
def _new_file_mode() -> int:
    mask = os.umask(0)  # (the only way to read the umask is to set it)
    os.umask(mask)
    return 0o666 & ~mask


def replace_file(path: str | os.PathLike, write: Callable[[str], None], what: str = "file") -> Path:
    """Write a file whole: write(temporary_path) fills a temporary file beside the target (with the
    target's suffix, for writers that read the format from it), which then replaces the target.
    Returns the file written (a symlink's target)."""
    target = check_kind(path, what)
    try:  # creating the temporary is the check that its folder exists and can be written
        handle, temporary = tempfile.mkstemp(prefix=".digitcmp-", suffix=".tmp" + target.suffix, dir=target.parent)
    except OSError as err:
        raise OSError(f"cannot write {what} {path}: folder {target.parent}: {err.strerror or err}") from None
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, _new_file_mode())  # as an ordinary new file would be, not mkstemp's 0600
        os.replace(temporary, target)
    except OSError as err:  # a full disk, a quota: the message names the file (the writer's may not)
        Path(temporary).unlink(missing_ok=True)
        raise OSError(f"cannot write {what} {path}: {err.strerror or err}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def write_text(path: str | os.PathLike, text: str, what: str = "file") -> Path:
    """Write text (UTF-8, newlines as given) whole, as replace_file does."""

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    return replace_file(path, write, what)
