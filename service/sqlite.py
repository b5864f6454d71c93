"""The small SQLite databases of the data directory (the result cache, jobs, keys and
claims): one way to open them, one connection per thread, and one way to write to them."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from service.errors import storage_errors


def connect_wal(path: Path, *, busy_timeout_s: float, schema: str) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode, with ``schema`` applied; sqlite3's own error
    if that fails (the result cache classifies it itself, see :func:`open_wal`)."""
    db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    db.executescript(schema)
    return db


def open_wal(path: Path, *, busy_timeout_s: float, schema: str, what: str) -> sqlite3.Connection:
    """:func:`connect_wal`, raising the storage problem (503 read-only, 507 full) rather
    than sqlite3's error when the data directory takes no writes, so that the caller
    answers it per request and recovers by itself once the directory takes writes again.
    ``what`` names the database in that problem.
    """
    with storage_errors(f"opening the {what}", path.parent):
        return connect_wal(path, busy_timeout_s=busy_timeout_s, schema=schema)


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


# A condition of a page: a SQL clause and its arguments, or None where it was not asked.
Condition = tuple[str, Sequence[Any]] | None


def page_query(
    select: str, conditions: Sequence[Condition], *, order: str, limit: int
) -> tuple[str, tuple[Any, ...]]:
    """``select`` narrowed by every condition given, in ``order``, at most ``limit`` rows:
    the SQL and its arguments (a page of a listing, newest first)."""
    asked = [condition for condition in conditions if condition is not None]
    sql = select
    if asked:
        sql += " WHERE " + " AND ".join(clause for clause, _ in asked)
    args = [arg for _, values in asked for arg in values]
    return f"{sql} ORDER BY {order} LIMIT ?", (*args, limit)


def one_of(column: str, values: Sequence[str] | None) -> Condition:
    """The condition that ``column`` is one of ``values``; None (no condition) for None."""
    return None if values is None else (f"{column} IN ({', '.join('?' * len(values))})", values)


@dataclass
class Database:
    """One SQLite file of the data directory (jobs, keys and claims), one connection per
    thread, opened on first use: a data directory that is read-only (or full) when the
    service starts is a 503 (507) per request then, not a failed start, and the service
    recovers by itself once it takes writes again.

    ``prepare`` runs once on each new connection, after ``schema`` (migrations, a row
    factory). ``what`` names the database in the problems.
    """

    path: Path
    _: KW_ONLY
    schema: str
    what: str
    busy_timeout_s: float
    prepare: Callable[[sqlite3.Connection], None] | None = None
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = open_wal(
                self.path, busy_timeout_s=self.busy_timeout_s, schema=self.schema, what=self.what
            )
            if self.prepare is not None:
                self.prepare(db)
            self._local.db = db
        return db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (SQLite's lock, across processes), a refused write raised
        as the storage problem it is; a transaction opened inside another joins it."""
        db = self.connection()
        if db.in_transaction:
            yield db
            return
        with storage_errors(f"writing the {self.what}", self.path.parent), transaction(db):
            yield db

    def close(self) -> None:
        """Close this thread's connection (the next use opens a new one)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
