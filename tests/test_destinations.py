"""Every path a command writes: the empty string, devices, FIFOs and sockets refused in one line
before any work; a symlink written through to its target, never replaced."""

import os
import signal
import socket
import stat
from pathlib import Path

import pytest
from safetensors import safe_open

from digitcmp.cli import main
from digitcmp.study.store import Store

TRAIN = ["train", "--arch", "fnn", "--epochs", "1", "--pairs", "60", "--test-pairs", "20"]


class Hung(BaseException):
    """Not an OSError: a command that hangs on a FIFO must fail the test, not look like a refusal."""


@pytest.fixture(autouse=True)
def no_hang():
    def on_alarm(signum, frame):
        raise Hung("the command waited on its destination")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def no_work(monkeypatch):
    """Any training (a run, a sweep, a trial) fails the test: destinations are checked before."""

    def trained(*args, **kwargs):
        raise AssertionError("work started before the destination was checked")

    monkeypatch.setattr("digitcmp.core.train.train_run", trained)
    monkeypatch.setattr("digitcmp.run.sweep.run_missing", trained)
    monkeypatch.setattr("digitcmp.tune.search.tune", trained)


def command(flag: str, tmp_path: Path, dest: str) -> list[str]:
    """The command line that writes to dest through flag; everything else goes under tmp_path."""
    repro = ["reproduce", "--experiment", "table1", "--seeds", "1", "--epochs", "1", "--no-progress"]
    db, out = ["--db", str(tmp_path / "r.sqlite")], ["--out", str(tmp_path / "out")]
    return {
        "train --save": [*TRAIN, "--save", dest],
        "reproduce --db": [*repro, *out, "--db", dest],
        "reproduce --out": [*repro, *db, "--out", dest],
        "reproduce --checkpoints": [*repro, *db, *out, "--checkpoints", dest],
        "tune --storage": ["tune", "tiny", "--trials", "1", "--no-progress", "--storage", dest],
        "report --out": ["report", *db, "--out", dest],
        "report --docs --out": ["report", "--docs", *db, "--out", dest],
    }[flag]


FLAGS = [
    "train --save",
    "reproduce --db",
    "reproduce --out",
    "reproduce --checkpoints",
    "tune --storage",
    "report --out",
    "report --docs --out",
]


def make(kind: str, tmp_path: Path) -> str:
    """A destination of the given kind that no command may write."""
    if kind == "empty":
        return ""
    if kind == "blank":
        return "   "
    if kind == "char device":
        return "/dev/null"
    if kind == "device full":
        return "/dev/full"
    path = tmp_path / "special"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()  # the socket file stays
    elif kind == "link to fifo":
        os.mkfifo(tmp_path / "pipe")
        path.symlink_to(tmp_path / "pipe")
    return str(path)


KINDS = ["empty", "blank", "char device", "device full", "fifo", "socket", "link to fifo"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flag", FLAGS)
def test_special_destinations_are_refused_before_any_work(tmp_path, capsys, no_work, flag, kind, one_line_error):
    if flag.startswith("report"):
        Store(tmp_path / "r.sqlite").close()  # an empty store to report on
    dest = make(kind, tmp_path)
    before = os.lstat(dest).st_mode if dest.strip() else None
    one_line_error(command(flag, tmp_path, dest))
    if before is not None:
        assert os.lstat(dest).st_mode == before  # still a device, FIFO, socket or link: not replaced
    if kind in ("fifo", "socket", "link to fifo"):
        assert {p.name for p in tmp_path.iterdir()} <= {"special", "pipe", "r.sqlite", "r.sqlite-wal", "r.sqlite-shm"}


def test_a_checkpoint_is_written_through_a_symlink(tmp_path):
    target = tmp_path / "real" / "model.safetensors"
    target.parent.mkdir()
    target.write_bytes(b"an older file")
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    assert main([*TRAIN, "--save", str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)  # the link is kept
    with safe_open(str(target), framework="pt") as f:  # and its target holds the checkpoint
        assert f.metadata()["arch"] == "fnn"
    assert stat.S_IMODE(target.stat().st_mode) & 0o044  # readable by others, as a new file would be


def test_a_dangling_symlink_gets_its_target_created(tmp_path):
    link = tmp_path / "link.safetensors"
    link.symlink_to(tmp_path / "new.safetensors")
    assert main([*TRAIN, "--save", str(link)]) == 0
    assert link.is_symlink() and (tmp_path / "new.safetensors").stat().st_size > 1000


def test_a_store_and_a_tuning_storage_are_written_through_symlinks(tmp_path, reproduce_argv):
    (tmp_path / "data").mkdir()
    db_link, storage_link = tmp_path / "r.sqlite", tmp_path / "t.sqlite"
    db_link.symlink_to(tmp_path / "data" / "store.sqlite")  # dangling: the store is created at the target
    storage_link.symlink_to(tmp_path / "data" / "tuning.sqlite")
    assert main(reproduce_argv(tmp_path, ["table1"], seeds=1, epochs=1)) == 0
    assert main(["tune", "tiny", "--trials", "1", "--no-progress", "--storage", str(storage_link)]) == 0
    assert db_link.is_symlink() and storage_link.is_symlink()
    assert Store(tmp_path / "data" / "store.sqlite", read_only=True).count() == 2  # table1's two rows, one seed
    assert (tmp_path / "data" / "tuning.sqlite").stat().st_size > 0


def test_report_files_that_are_fifos_are_refused_not_waited_on(tmp_path, capsys, reproduce_argv, one_line_error):
    assert main(reproduce_argv(tmp_path, ["table1"], seeds=1, epochs=1)) == 0
    capsys.readouterr()
    (tmp_path / "o").mkdir()
    os.mkfifo(tmp_path / "o" / "report.md")  # a file inside the folder, not the folder itself
    one_line_error(["report", "--db", str(tmp_path / "r.sqlite"), "--out", str(tmp_path / "o")], "FIFO")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "o" / "report.md").st_mode)


@pytest.mark.parametrize(
    "storage, expected",
    [
        ("garbage://x", "not a storage URL"),
        ("postgresql+nodriver://u@127.0.0.1/db", "not a storage URL"),
        ("://", "not a storage URL"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite:///{tmp}", "is a folder"),
        ("{tmp}/notes.txt/t.sqlite", "is a file, not a folder"),
        ("sqlite:///{tmp}/notes.txt/deeper/t.sqlite", "is a file, not a folder"),
        ("sqlite:////dev/null", "character device"),
        ("{tmp}/notes.txt", "not a SQLite file"),
        ("sqlite:///{tmp}/notes.txt", "not a SQLite file"),
        ("mysql://u@127.0.0.1:1/db", "cannot open tuning storage"),  # no driver here, or nothing listening
    ],
)
def test_tuning_storages_that_cannot_be_opened_are_one_line_and_leave_nothing(
    tmp_path, capsys, storage, expected, one_line_error
):
    (tmp_path / "notes.txt").write_text("my notes\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    argv = ["tune", "tiny", "--trials", "1", "--no-progress", "--storage", storage.format(tmp=tmp_path)]
    one_line_error(argv, expected)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing created, nothing changed


def test_a_storage_created_by_a_failed_tune_is_removed(tmp_path, capsys, monkeypatch, one_line_error):
    def fails(*args, **kwargs):
        raise OSError("the workers could not start")

    monkeypatch.setattr("digitcmp.tune.search._run_plans", fails)
    one_line_error(["tune", "tiny", "--no-progress", "--storage", str(tmp_path / "t.sqlite")], "could not start")
    assert list(tmp_path.iterdir()) == []


def test_a_tuning_storage_in_a_missing_folder_is_created_and_a_failed_tune_removes_both(
    tmp_path, capsys, monkeypatch, one_line_error
):
    storage = tmp_path / "a" / "b" / "t.sqlite"
    argv = ["tune", "tiny", "--trials", "1", "--no-progress", "--storage", str(storage)]

    def fails(*args, **kwargs):
        raise OSError("the workers could not start")

    with monkeypatch.context() as m:
        m.setattr("digitcmp.tune.search._run_plans", fails)
        one_line_error(argv, "could not start")
    assert list(tmp_path.iterdir()) == []  # neither the file nor the folders made for it
    assert main(argv) == 0
    assert storage.is_file() and sorted(p.name for p in storage.parent.iterdir()) == ["t.sqlite"]  # no lock file left
