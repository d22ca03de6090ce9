"""Named entries of one kind (architectures, towers, augmentations, experiments, figures, search
spaces, samplers), under one rule: a name is declared once (declaring it again is a ValueError,
so that two declarations cannot silently replace each other), and looking up an unknown name is a
ValueError that lists the valid ones."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class Registry(dict):
    """A dict of named entries with the registry rules; `in`, iteration and len work as for a dict."""

    def __init__(self, kind: str, entries: dict | None = None):
        super().__init__()
        self.kind = kind
        for name, entry in (entries or {}).items():
            self[name] = entry

    def __setitem__(self, name, entry) -> None:
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is declared twice")
        super().__setitem__(name, entry)

    def __missing__(self, name):
        raise ValueError(f"unknown {self.kind} {name!r}; valid: {', '.join(map(str, self))}")

    def register(self, name: str, entry: T) -> T:
        """Declare entry under name; returns the entry."""
        self[name] = entry
        return entry
