"""Cheap reads of a SQLite file beside the pool: has anything committed since we last looked, and one-row lookups.

Every request that only reads the floor would otherwise open a transaction just to learn that nothing changed.
SQLite's `PRAGMA data_version` answers that on a connection of its own: its value changes whenever any other
connection, of this process or another, commits to the file, and stays put otherwise.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.sql import Select


class ChangeProbe:
    """A read-only autocommit connection to one SQLite file, shared by threads under its own lock."""

    def __init__(self, engine: Engine) -> None:
        """Open the probe on the file behind `engine` (a file-backed SQLite engine)."""
        if not self.supports(engine):
            raise ValueError(f"a change probe needs a SQLite file, not {engine.url!r}")
        self._dialect = engine.dialect
        # Autocommit (isolation_level=None): a connection inside a read transaction would keep seeing one snapshot.
        self._conn = sqlite3.connect(str(engine.url.database), isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._compiled: dict[int, tuple[Select[Any], str, tuple[str, ...]]] = {}

    @staticmethod
    def supports(engine: Engine) -> bool:
        """True for engines a probe can watch (a SQLite file; not an in-memory database or another back end)."""
        path = engine.url.database
        return engine.dialect.name == "sqlite" and bool(path) and path != ":memory:"

    def data_version(self) -> int:
        """A number that differs from the last one seen iff some other connection committed in between."""
        with self._lock:
            row = self._conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def first(self, statement: Select[Any], params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of a SELECT with bound parameters, as of the latest commit (one statement, no transaction)."""
        sql, names = self._compiled_form(statement)
        with self._lock:
            row = self._conn.execute(sql, tuple(params[name] for name in names)).fetchone()
        return tuple(row) if row is not None else None

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def _compiled_form(self, statement: Select[Any]) -> tuple[str, tuple[str, ...]]:
        # Keyed by identity, and the entry keeps the statement alive so that its id is never reused by another.
        found = self._compiled.get(id(statement))
        if found is None or found[0] is not statement:
            compiled = statement.compile(dialect=self._dialect)
            found = (statement, str(compiled), tuple(compiled.positiontup or ()))
            self._compiled[id(statement)] = found
        return found[1], found[2]
