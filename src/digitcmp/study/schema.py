"""The results store's tables, derived from the records they hold: a run's RunResult and its
EpochRecords (core/records.py), its Provenance, and a sweep's SweepRecord. Each column's SQL type
and nullability follow from the field's annotation (int, float, str; `| None` for NULL), so the
schema, the checks of an opened store and the inserts are written once, here."""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields

from ..core.records import EpochRecord, RunResult

SQL_TYPES = {int: "INTEGER", float: "REAL", str: "TEXT"}
# The SQLite storage classes a value of each type may have: an integer is a valid REAL value.
STORED_AS = {"INTEGER": ("integer",), "REAL": ("real", "integer"), "TEXT": ("text",)}


@dataclass(frozen=True)
class Provenance:
    """Versions, commit, device, the machine that trained a run and the backend that ran it."""

    engine: str
    device: str
    package_version: str
    torch_version: str
    git_commit: str | None
    host: str
    backend: str
    cpu: str | None = None
    """The CPU's model (None in runs stored before it was recorded)."""
    isa: str | None = None
    """The instruction sets torch's kernels and oneDNN dispatched to (perf.instruction_set): runs
    are equal to the last digit only under the same ones."""


@dataclass(frozen=True)
class SweepRecord:
    """What a reproduce asked for, so that `report` can rebuild the same report later."""

    experiments: str  # a JSON list of experiment names
    seeds: int  # 0: each experiment's default number
    epochs: int | None
    command: str
    started_at: str


@dataclass(frozen=True)
class Column:
    name: str
    sql: str  # INTEGER, REAL or TEXT
    nullable: bool = False
    key: str = ""  # "PRIMARY KEY", "REFERENCES runs(id)"
    default: str | None = None  # SQL of the value older rows get (a column later versions added)

    def declaration(self) -> str:
        """The column as CREATE TABLE declares it."""
        parts = [self.name, self.sql]
        if self.key == "PRIMARY KEY":
            parts.append("PRIMARY KEY")
        elif not self.nullable:
            parts.append("NOT NULL")
        if self.key and self.key != "PRIMARY KEY":
            parts.append(self.key)
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        return " ".join(parts)

    @property
    def stored_as(self) -> tuple[str, ...]:
        """The SQLite storage classes a valid value of the column has."""
        return STORED_AS[self.sql] + (("null",) if self.nullable else ())


def columns_of(record: type, names: list[str] | None = None, default: str | None = None) -> list[Column]:
    """Columns for a record's fields (all, or the named ones in that order); every one must be an
    int, a float or a str, or one of them or None."""
    hints = typing.get_type_hints(record)
    chosen = names or [f.name for f in fields(record)]
    out = []
    for name in chosen:
        hint = hints[name]
        args = typing.get_args(hint)
        nullable = type(None) in args
        base = next(a for a in args if a is not type(None)) if args else hint
        out.append(Column(name, SQL_TYPES[base], nullable, default=default))
    return out


RESULT_COLUMNS = ("seed", "test_error", "train_error", "train_seconds")  # a RunResult's scalars, in `runs`
RUNS = [
    Column("id", "INTEGER", key="PRIMARY KEY"),
    Column("config_hash", "TEXT"),
    *columns_of(RunResult, list(RESULT_COLUMNS[:1])),
    Column("experiment", "TEXT"),
    Column("row_name", "TEXT"),
    Column("test_error", "REAL"),  # a test run's (validation runs are not stored here)
    *columns_of(RunResult, list(RESULT_COLUMNS[2:])),
    Column("config", "TEXT"),  # the RunConfig as JSON
    *columns_of(Provenance, ["engine", "device", "package_version", "torch_version", "git_commit", "host"]),
    Column("finished_at", "TEXT"),
    # Columns later versions added, with what an older run holds (Store gives an older store them).
    Column("has_test_error_curve", "INTEGER", default="0"),
    *columns_of(Provenance, ["backend"], default="'local'"),
    *columns_of(Provenance, ["cpu", "isa"], default="NULL"),
]
# The store holds test runs (Store.add_run refuses validation runs): their errors are the test pairs'.
TEST_EPOCH_FIELDS = [f.name for f in fields(EpochRecord) if f.name != "validation_error"]
EPOCHS = [Column("run_id", "INTEGER", key="REFERENCES runs(id)"), *columns_of(EpochRecord, TEST_EPOCH_FIELDS)]
SWEEPS = [Column("id", "INTEGER", key="PRIMARY KEY"), *columns_of(SweepRecord)]
TABLES = {"runs": RUNS, "epochs": EPOCHS, "sweeps": SWEEPS}
CONSTRAINTS = {"runs": ["UNIQUE (config_hash, seed)"], "epochs": ["PRIMARY KEY (run_id, epoch)"], "sweeps": []}

SCHEMA = "\n".join(
    f"CREATE TABLE IF NOT EXISTS {table} (\n    "
    + ",\n    ".join([c.declaration() for c in columns] + CONSTRAINTS[table])
    + "\n);"
    for table, columns in TABLES.items()
)

# What a digitcmp store must hold: each table's columns (but those later versions added) and the
# SQLite storage classes each may hold.
REQUIRED = {table: {c.name: c.stored_as for c in columns if c.default is None} for table, columns in TABLES.items()}


def insert_sql(table: str, verb: str = "INSERT") -> str:
    """An insert of every column of a table but its own id, named, in declaration order."""
    names = [c.name for c in TABLES[table] if c.key != "PRIMARY KEY"]
    return f"{verb} INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"


def row_values(table: str, values: dict) -> tuple:
    """A dict of column values in the order of insert_sql (every column named, none left over)."""
    names = [c.name for c in TABLES[table] if c.key != "PRIMARY KEY"]
    if set(values) != set(names):
        raise ValueError(f"{table}: values for {sorted(set(names) ^ set(values))} missing or unknown")
    return tuple(values[n] for n in names)
