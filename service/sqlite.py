"""The small SQLite databases beside the cache (keys and claims, jobs): one way to open
them, and one way to write to them."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from service.errors import storage_errors


def open_wal(path: Path, *, busy_timeout_s: float, schema: str, what: str) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode, with ``schema`` applied.

    Raises the storage problem (503 read-only, 507 full) rather than sqlite3's error when
    the data directory takes no writes, so that the caller answers it per request and
    recovers by itself once the directory takes writes again. ``what`` names the database
    in that problem.
    """
    with storage_errors(f"opening the {what}", path.parent):
        db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        db.executescript(schema)
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``db`` inside ``BEGIN IMMEDIATE``, committed when the block ends, else rolled back."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (it does on a full disk): keep the first
        # error, and never leave the connection inside a transaction.
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise
