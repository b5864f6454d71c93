"""The small SQLite databases beside the cache (keys and claims, jobs): one way to open them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from service.errors import StorageError


def open_wal(path: Path, *, busy_timeout_s: float, schema: str, what: str) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode, with ``schema`` applied.

    Raises the storage problem (503 read-only, 507 full) rather than sqlite3's error when
    the data directory takes no writes, so that the caller answers it per request and
    recovers by itself once the directory takes writes again. ``what`` names the database
    in that problem.
    """
    try:
        db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        db.executescript(schema)
    except sqlite3.Error as exc:
        problem = StorageError.of(exc, f"opening the {what}", directory=path.parent)
        if problem is None:
            raise
        raise problem from None
    return db
