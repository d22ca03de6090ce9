"""Settings: dataclass fields that carry their allowed values (a collection of names, or a finite
range) and their help text (the docstring under each field). ModelOptions (models.py) and
RunConfig (config.py) declare their fields with `setting`; validation, the command line and
checkpoint loading read these declarations."""

from __future__ import annotations

import ast
import inspect
import math
import textwrap
from collections.abc import Collection
from dataclasses import Field, field, fields, is_dataclass
from functools import cache
from typing import Any


def setting(
    default: object,
    *,
    choices: Collection[str] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    added: bool = False,
    kind: type | None = None,
) -> Any:
    """A settings field with its allowed values: a collection of names (read when validating,
    so a registry that grows is followed) or a finite range [low, high] (open ends as flagged).
    added: a field declared after runs were stored; at its default it is left out of the config
    hash, so that every stored run keeps its identity (a default must then change nothing).
    kind: the type of the values of a field whose default is None, "unset" (a value the owner
    fills in, such as the optimizer's own learning rate); other fields' kind is their default's."""
    meta = {
        "choices": choices, "low": low, "high": high, "low_open": low_open, "high_open": high_open, "added": added,
        "kind": kind,
    }  # fmt: skip
    return field(default=default, metadata=meta)


def check_fields(obj: object) -> None:
    """Check (and normalize: floats from ints, tuples from lists) every field of a frozen dataclass
    instance against its declaration; a bad value is a ValueError naming the field."""
    for f in fields(obj):
        object.__setattr__(obj, f.name, check_field(f, getattr(obj, f.name)))


def field_kind(f: Field) -> type:
    """The Python type of a settings field's values: bool, int, float, str or tuple (of ints)."""
    return f.metadata.get("kind") or type(f.default)


def describe_range(f: Field) -> str:
    """A field's allowed values in words, as the error messages and the help text give them."""
    meta = f.metadata
    if meta.get("choices") is not None:
        return "one of " + ", ".join(meta["choices"])
    if meta.get("low") is None:
        return "true or false" if field_kind(f) is bool else "a string"
    left = "(" if meta["low_open"] else "["
    right = ")" if meta["high_open"] else "]"
    what = {int: "an integer", float: "a number", tuple: "integers"}[field_kind(f)]
    return f"{what} in {left}{meta['low']:g}, {meta['high']:g}{right}"


def _in_range(f: Field, value: float) -> bool:
    meta = f.metadata
    low_ok = value > meta["low"] if meta["low_open"] else value >= meta["low"]
    high_ok = value < meta["high"] if meta["high_open"] else value <= meta["high"]
    return low_ok and high_ok


def check_field(f: Field, value: object) -> object:
    """The field's value, checked against its declaration (ints accepted for floats, lists for
    tuples); anything else is a ValueError naming the field and what it accepts."""
    kind, meta = field_kind(f), f.metadata
    bad = ValueError(f"{f.name} must be {describe_range(f)}, got {value!r}")
    if value is None and f.default is None:  # unset: its owner fills it in
        return None
    if kind is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if kind is str:
        if not isinstance(value, str) or (meta.get("choices") is not None and value not in meta["choices"]):
            raise bad
        return value
    if kind is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"{f.name} must be two integers, got {value!r}")
        if not all(isinstance(v, int) and not isinstance(v, bool) and _in_range(f, v) for v in value):
            raise bad
        return tuple(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad
    if kind is int:
        if not isinstance(value, int):
            raise bad
    else:
        value = float(value)
        if not math.isfinite(value):
            raise bad
    if not _in_range(f, value):
        raise bad
    return value


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (its bases' fields included), by
    field name, on one line."""
    docs = {}
    for base in reversed(cls.__mro__):
        if is_dataclass(base) and base is not object:
            docs.update(_own_field_docs(base))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs
