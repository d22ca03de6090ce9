"""The results store: one SQLite file (WAL), one row per finished run, written in one transaction.

A run is identified by (config_hash, seed): a stored run is never trained again, and the UNIQUE
constraint makes a second copy impossible even if two writers race. SQLite's journal keeps the
file intact when a process is killed at any moment; only the runs still in flight are lost.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

import torch

from ..common.host import node_name
from ..common.version import __version__
from ..core.config import RunConfig
from ..core.records import EpochRecord, RunResult
from .schema import (
    REQUIRED,
    RESULT_COLUMNS,
    RUNS,
    SCHEMA,
    TEST_EPOCH_FIELDS,
    Provenance,
    SweepRecord,
    insert_sql,
    row_values,
)

# Columns of `runs` that later versions added (schema.RUNS declares them): the SQL of the value an
# older run has.
ADDED_COLUMNS = {
    # a run holds per-epoch test errors when none of its epochs lacks one
    "has_test_error_curve": (
        "(NOT EXISTS (SELECT 1 FROM epochs WHERE epochs.run_id = runs.id AND epochs.test_error IS NULL))"
    ),
    "backend": "'local'",  # the only backend before Ray
    "cpu": "NULL",  # not recorded before: unknown
    "isa": "NULL",
}
assert set(ADDED_COLUMNS) == {c.name for c in RUNS if c.default is not None}


def engine_family(engine: str) -> str:
    """'single' or 'batched', of a stored run's engine ('single', 'batched x10'): the two give
    different numbers for the same config and seed (other kernels); how many seeds were batched
    together does not change a seed's numbers."""
    return "batched" if engine.startswith("batched") else engine


class StoreError(ValueError):
    """The results store cannot be used (busy, unreadable, not a digitcmp store)."""


def _experiment_names(text: str, path) -> list[str]:
    """A sweep's experiments, stored as a JSON list of names."""
    try:
        names = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        names = None
    if not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
        raise StoreError(f"results store {path} is damaged: a sweep's experiments are not a list of names")
    return names


def checked_tables(conn: sqlite3.Connection, path: str | os.PathLike, what: str, instead: str) -> set[str]:
    """The table names of a SQLite database whose pages pass SQLite's quick check; a damaged one
    is a StoreError naming what it is and what to do instead. (A file that is not SQLite at all
    raises sqlite3.DatabaseError here, for the caller to word.)"""
    verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
    if verdict != "ok":
        raise StoreError(f"{what} {path} is damaged ({verdict}); restore it or {instead}")
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def check_store(conn: sqlite3.Connection, path: str | os.PathLike) -> None:
    """Refuse, in one line, a database that is damaged or is not a digitcmp store: pages that
    fail SQLite's check, a missing table or column, a value of the wrong type in a column."""
    try:
        tables = checked_tables(conn, path, "results store", "use another --db")
        if not set(REQUIRED) <= tables:
            raise StoreError(f"{path} is not a digitcmp results store (it lacks the runs, epochs and sweeps tables)")
        for table, columns in REQUIRED.items():
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            lost = sorted(set(columns) - present)
            if lost:
                raise StoreError(f"results store {path} is damaged: table {table} lacks column(s) {', '.join(lost)}")
            for column, types in columns.items():
                allowed = ", ".join(f"'{t}'" for t in types)
                (bad,) = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE typeof({column}) NOT IN ({allowed})").fetchone()
                if bad:
                    kinds = " or ".join(types)
                    raise StoreError(f"results store {path} is damaged: {bad} value(s) in {table}.{column} are not {kinds}")
        for table, columns in REQUIRED.items():  # every text decodes (SQLite stores any bytes as text)
            for column, types in columns.items():
                if "text" in types:
                    try:
                        for _ in conn.execute(f"SELECT {column} FROM {table} WHERE typeof({column}) = 'text'"):
                            pass
                    except sqlite3.OperationalError:
                        raise StoreError(
                            f"results store {path} is damaged: {table}.{column} holds text that is not UTF-8"
                        ) from None
        for (text,) in conn.execute("SELECT experiments FROM sweeps"):
            _experiment_names(text, path)
    except sqlite3.DatabaseError as err:
        raise StoreError(f"cannot use results store {path}: {err}") from None


def stored_epoch(record: EpochRecord) -> dict:
    """An epoch of a test run as the epochs table holds it (a test run has no validation errors)."""
    return {name: getattr(record, name) for name in TEST_EPOCH_FIELDS}


@lru_cache(maxsize=1)  # a process runs one source tree
def git_commit() -> str | None:
    """The commit of the source tree this package runs from, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def now() -> str:
    """The time now, UTC, in ISO 8601 to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def provenance(
    device: str,
    engine: str,
    host: str | None = None,
    backend: str = "local",
    cpu: str | None = None,
    isa: str | None = None,
    versions: tuple[str, str, str | None] | None = None,
) -> Provenance:
    """The provenance recorded with every run trained here, or on `host` (a worker node, with its
    own `cpu`, `isa` and `versions`: digitcmp's, torch's and the git commit it ran from)."""
    from ..common.host import cpu_model
    from ..core.perf import instruction_set

    package, torch_version, commit = versions or (__version__, torch.__version__, git_commit())
    return Provenance(
        engine, device, package, torch_version, commit, host or node_name(), backend,
        cpu or cpu_model(), isa or instruction_set(),
    )  # fmt: skip


class Store:
    """A results database on disk."""

    def __init__(self, path: str | os.PathLike, read_only: bool = False):
        """Open (creating it if needed) the store at path; read_only opens an existing file
        without changing it, and refuses one that is not a digitcmp store."""
        from ..common.destinations import file_target, make_folders, remove_created

        self.path = Path(path)  # as given, for messages
        if self.path.is_dir():
            raise StoreError(f"results store {self.path} is a folder; give a file, e.g. {self.path / 'digitcmp.sqlite'}")
        created: list[Path] = []  # the folders this call made, removed again if the store cannot be made
        try:
            if not read_only:
                created = make_folders(self.path.absolute().parent, f"results store {self.path}")
            # The file itself: a symlink's target (the link is kept); a device, FIFO or socket is refused
            # before SQLite opens it (opening a FIFO would wait forever for a writer).
            self.file = file_target(self.path, "results store") if not read_only else Path(os.path.realpath(self.path))
            if read_only and not self.file.is_file():
                raise StoreError(f"results store {self.path} is not a regular file")
        except OSError as err:
            remove_created([], created)
            raise StoreError(str(err)) from None  # (destinations' messages are one line)
        existing = self.file.is_file() and self.file.stat().st_size > 0
        new = not self.file.exists()
        try:
            if existing or read_only:
                # Every check, the decoding of every value included, through a read-only connection
                # first: a foreign or damaged file is refused byte for byte as it was.
                uri = self.file.as_uri() + "?mode=ro"
                probe = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
                try:
                    check_store(probe, self.path)
                finally:
                    if not read_only:
                        probe.close()
                if read_only:
                    self.conn = probe
                    self._column_sql = self._optional_columns()
                    return
            self.conn = sqlite3.connect(self.file, timeout=30, isolation_level=None)
            try:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.executescript(SCHEMA)
                self._add_columns()
                self._column_sql = self._optional_columns()
            except BaseException:
                self.conn.close()
                raise
        except (sqlite3.DatabaseError, OSError) as err:
            if new:  # a store this call began and could not finish: nothing left in the way of the rerun
                remove_created([self.file, Path(f"{self.file}-wal"), Path(f"{self.file}-shm")], created)
            raise StoreError(f"cannot use results store {self.path}: {err}") from None

    def close(self) -> None:
        """Close the database."""
        self.conn.close()

    def _optional_columns(self) -> dict[str, str]:
        """SQL for the columns later versions added: the column itself, or, in a store opened
        read-only from before them, what it would hold."""
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(runs)")}
        return {name: name if name in columns else f"{value} AS {name}" for name, value in ADDED_COLUMNS.items()}

    def _add_columns(self) -> None:
        """Give a store written before them the columns later versions added, filled with what
        they would have held."""
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(runs)")}
        declarations = {c.name: c.declaration().removeprefix(c.name + " ") for c in RUNS}
        for name, value in ADDED_COLUMNS.items():
            if name not in columns:
                declaration = declarations[name]
                with self._transaction() as cur:
                    cur.execute(f"ALTER TABLE runs ADD COLUMN {name} {declaration}")
                    cur.execute(f"UPDATE runs SET {name} = {value}")

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the store's writer lock; a second writer is refused with a clear message. The lock
        is a file beside the store, removed when the holder is done, named by the store file's
        identity (device and inode): every path to the same file (a symlink, a hard link beside it,
        ../x/store.sqlite) meets the same lock."""
        from ..common.locks import LockBusy, file_lock

        identity = self.file.stat()
        lock_path = self.file.with_name(f".digitcmp-store-{identity.st_dev:x}-{identity.st_ino:x}.lock")
        try:
            with file_lock(lock_path):
                yield self
        except LockBusy:
            raise StoreError(
                f"results store {self.path} is in use by another digitcmp reproduce; wait for it or use --db"
            ) from None

    def stored_keys(self) -> dict[tuple[str, int], bool]:
        """Every (config_hash, seed) already stored, and whether that run holds per-epoch test errors."""
        curve = self._column_sql["has_test_error_curve"]
        return {(h, s): bool(c) for h, s, c in self.conn.execute(f"SELECT config_hash, seed, {curve} FROM runs")}

    def engine_families(self) -> dict[str, set[str]]:
        """The engines ('single', 'batched') each config's stored runs were trained by."""
        families: dict[str, set[str]] = {}
        for config_hash, engine in self.conn.execute("SELECT DISTINCT config_hash, engine FROM runs"):
            families.setdefault(config_hash, set()).add(engine_family(engine))
        return families

    def add_run(
        self, experiment: str, row: str, config: RunConfig, result: RunResult, prov: Provenance, replace: bool = False
    ) -> bool:
        """Store a finished run and its epochs in one transaction; False if it was already there.
        replace: a run retrained to add what the stored copy lacks (its per-epoch test errors)
        takes the place of that copy, in the same transaction. The store holds runs scored on the
        test pairs: a validation run (validation mode, for tuning) is refused."""
        if result.test_error is None:
            raise ValueError(
                f"results store: {experiment}/{row} seed {result.seed} was scored on validation pairs; the store holds "
                "test runs (validation runs belong to a tuning storage: digitcmp tune)"
            )
        run = {
            "config_hash": config.config_hash(),
            "experiment": experiment,
            "row_name": row,
            "config": json.dumps(config.to_dict(), sort_keys=True),
            **{name: getattr(result, name) for name in RESULT_COLUMNS},
            **asdict(prov),
            "finished_at": now(),
            "has_test_error_curve": int(result.has_test_error_curve),
        }
        with self._transaction() as cur:
            if replace:
                key = (run["config_hash"], result.seed)
                cur.execute(
                    "DELETE FROM epochs WHERE run_id IN (SELECT id FROM runs WHERE config_hash = ? AND seed = ?)", key
                )
                cur.execute("DELETE FROM runs WHERE config_hash = ? AND seed = ?", key)
            cur.execute(insert_sql("runs", "INSERT OR IGNORE"), row_values("runs", run))
            if cur.rowcount == 0:
                return False
            run_id = cur.lastrowid
            cur.executemany(
                insert_sql("epochs"), [row_values("epochs", {"run_id": run_id, **stored_epoch(e)}) for e in result.epochs]
            )
        return True

    def add_sweep(self, experiments: list[str], seeds: int, epochs: int | None, command: str) -> None:
        """Record what a reproduce asked for, so that `report` can rebuild the same report later
        (seeds 0: each experiment's default number)."""
        record = SweepRecord(json.dumps(experiments), seeds, epochs, command, now())
        with self._transaction() as cur:
            cur.execute(insert_sql("sweeps"), row_values("sweeps", asdict(record)))

    def last_sweep(self) -> dict | None:
        """The last sweep recorded (experiments, seeds, epochs, command, start), or None."""
        row = self.conn.execute(
            "SELECT experiments, seeds, epochs, command, started_at FROM sweeps ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return {
            "experiments": _experiment_names(row[0], self.path),
            "seeds": row[1],
            "epochs": row[2],
            "command": row[3],
            "started_at": row[4],
        }

    def runs(self, config_hash: str, seeds: int) -> list[dict]:
        """The stored runs of a config with seed < seeds, ordered by seed."""
        cur = self.conn.execute(
            f"""SELECT id, seed, test_error, train_error, train_seconds, engine, device, torch_version, git_commit,
                      host, finished_at, {self._column_sql["has_test_error_curve"]}, {self._column_sql["backend"]}
                      FROM runs WHERE config_hash = ? AND seed < ? ORDER BY seed""",
            (config_hash, seeds),
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def epochs(self, run_ids: list[int]) -> dict[int, list[dict]]:
        """Per-epoch records of the given runs."""
        out: dict[int, list[dict]] = {i: [] for i in run_ids}
        if not run_ids:
            return out
        marks = ",".join("?" * len(run_ids))
        cur = self.conn.execute(
            f"SELECT run_id, epoch, loss, loss_main, loss_aux, train_error, test_error FROM epochs "
            f"WHERE run_id IN ({marks}) ORDER BY run_id, epoch",
            run_ids,
        )
        names = [d[0] for d in cur.description]
        for r in cur.fetchall():
            out[r[0]].append(dict(zip(names, r)))
        return out

    def commits(self, run_ids: list[int]) -> list[tuple[str | None, int]]:
        """The git commits the given runs were trained at, with how many runs each, most runs first."""
        marks = ",".join("?" * len(run_ids))
        cur = self.conn.execute(
            f"SELECT git_commit, COUNT(*) AS n FROM runs WHERE id IN ({marks}) GROUP BY git_commit ORDER BY n DESC",
            run_ids,
        )
        return cur.fetchall()

    def engines(self, run_ids: list[int]) -> dict[str, int]:
        """How many of the given runs each engine family ('single', 'batched') trained."""
        marks = ",".join("?" * len(run_ids))
        counts: dict[str, int] = {}
        for engine, n in self.conn.execute(
            f"SELECT engine, COUNT(*) FROM runs WHERE id IN ({marks}) GROUP BY engine", run_ids
        ):
            counts[engine_family(engine)] = counts.get(engine_family(engine), 0) + n
        return dict(sorted(counts.items()))

    def hardware(self, run_ids: list[int]) -> list[tuple[str | None, str | None, int]]:
        """The CPU models and instruction sets the given runs were trained with (None: not recorded,
        a run stored before they were), with how many runs each, most runs first."""
        marks = ",".join("?" * len(run_ids))
        cpu, isa = self._column_sql["cpu"], self._column_sql["isa"]  # (a read-only older store lacks them)
        cur = self.conn.execute(
            f"SELECT cpu, isa, COUNT(*) AS n FROM (SELECT {cpu}, {isa} FROM runs WHERE id IN ({marks})) "
            "GROUP BY cpu, isa ORDER BY n DESC",
            run_ids,
        )
        return cur.fetchall()

    def count(self) -> int:
        """How many runs are stored."""
        return self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    @contextmanager
    def _transaction(self):
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            if self.conn.in_transaction:  # SQLite itself rolls back on some errors (a full disk)
                cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
