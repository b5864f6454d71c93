"""The result cache's SQLite file (``<data_dir>/cache.sqlite3``, WAL mode): one
connection per thread to the file now at the path, the lock that keeps processes from
moving it aside under each other's writes, and what happens when it breaks.

Several processes may share the file. Moving a broken one aside happens under an
exclusive ``flock`` on ``cache.sqlite3.lock`` and only once the file is seen broken
again under that lock (another process may have replaced it already), and every write
holds the lock shared and goes to the file now at the path, never to one moved aside.
A write the disk refuses (full, read-only) raises a :class:`StorageError` for the
client, and :meth:`CacheDatabase.storage_problem` says so to ``/readyz`` until it passes.

What is stored in it is :mod:`service.store` (benchmarks, plots, models),
:mod:`service.store_leases` and :mod:`service.store_documents`, each a layer on
:class:`CacheDatabase`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from service.errors import MIN_FREE_BYTES, StorageError
from service.memory import MemoryLRU
from service.sqlite import connect_wal, transaction

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS benchmarks (
    id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    sha TEXT NOT NULL,
    size INTEGER NOT NULL,
    accessed REAL NOT NULL,
    created REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS benchmarks_accessed ON benchmarks (accessed);
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    sha TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS benchmark_models (
    benchmark_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    PRIMARY KEY (benchmark_id, model_id)
);
CREATE INDEX IF NOT EXISTS benchmark_models_model ON benchmark_models (model_id);
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL,
    process TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS probe (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS plots (
    benchmark_id TEXT NOT NULL,
    key TEXT NOT NULL,
    png BLOB NOT NULL,
    sha TEXT NOT NULL,
    PRIMARY KEY (benchmark_id, key)
);
"""

# How long the readiness probe waits for a database another process has locked.
PROBE_BUSY_MS = 1000

# How long a connection waits for a database another process has locked (seconds).
BUSY_TIMEOUT_S = 30.0


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CorruptPayloadError(Exception):
    """A stored payload does not match its checksum."""


class CacheDatabase:
    """The cache's SQLite file at ``path``, and the in-process layer of hot values in
    front of it (``memory_bytes``), emptied with the file when that is moved aside."""

    def __init__(self, path: Path, *, memory_bytes: int) -> None:
        self.path = path
        self._memory = MemoryLRU(memory_bytes)
        self._local = threading.local()
        self._generation = 0
        self._lock = threading.Lock()
        self._access_written: dict[str, float] = {}
        self.corrupt_entries = 0
        self._open_or_reset()

    # -- connections -------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        connection = connect_wal(self.path, busy_timeout_s=BUSY_TIMEOUT_S, schema=SCHEMA)
        columns = {row[1] for row in connection.execute("PRAGMA table_info(leases)")}
        if "process" not in columns:
            # A database from before leases named their process; another process may
            # add the column first.
            with contextlib.suppress(sqlite3.OperationalError):
                connection.execute("ALTER TABLE leases ADD COLUMN process TEXT NOT NULL DEFAULT ''")
        columns = {row[1] for row in connection.execute("PRAGMA table_info(benchmarks)")}
        if "created" not in columns:
            # A database from before benchmarks were listed: their last use stands for
            # their creation. Another process may add the column first.
            with contextlib.suppress(sqlite3.OperationalError):
                connection.execute(
                    "ALTER TABLE benchmarks ADD COLUMN created REAL NOT NULL DEFAULT 0"
                )
                connection.execute("UPDATE benchmarks SET created = accessed WHERE created = 0")
        connection.execute(
            "CREATE INDEX IF NOT EXISTS benchmarks_created ON benchmarks (created, id)"
        )
        return connection

    def _open_or_reset(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self._connection().execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
        except sqlite3.OperationalError:
            # Cannot open (permissions, a directory in the way): serve without a cache and
            # say so through readiness, never touch what is there.
            logger.exception("cache database %s cannot be opened", self.path)
        except sqlite3.DatabaseError as exc:
            self._quarantine(exc)

    def _inode(self) -> int | None:
        try:
            return self.path.stat().st_ino
        except OSError:
            return None

    def _lock_fd(self) -> int | None:
        """This thread's descriptor of ``<path>.lock``; None where it cannot be made."""
        fd: int | None = getattr(self._local, "lock_fd", None)
        if fd is None:
            try:
                fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError:
                return None  # a read-only directory: nothing can be moved aside either
            self._local.lock_fd = fd
        return fd

    @contextmanager
    def _flock(self, operation: int) -> Iterator[None]:
        """Hold ``<path>.lock`` (shared or exclusive) across processes."""
        fd = self._lock_fd()
        if fd is None:
            yield
            return
        fcntl.flock(fd, operation)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _still_unreadable(self) -> bool:
        """Whether the file now at the path fails a check, through a connection of its own."""
        try:
            with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as db:
                return bool(db.execute("PRAGMA quick_check").fetchone()[0] != "ok")
        except sqlite3.OperationalError:
            return False  # busy or locked: in use, so not to be moved
        except sqlite3.DatabaseError:
            return True

    def _quarantine(self, exc: Exception) -> None:
        """Move an unreadable database aside and start an empty one: it is only a cache.

        Two processes that both saw the file broken must not each move one aside: the
        second would move the first one's fresh database, results and all (3 were lost
        so). So under the exclusive lock, the file at the path is checked again first.
        """
        with self._lock:
            self._generation += 1
            self._access_written.clear()
            try:
                with self._flock(fcntl.LOCK_EX):
                    if not self._still_unreadable():
                        logger.warning(
                            "cache database %s failed (%s) but the file now there is sound "
                            "(replaced by another process?): using it",
                            self.path,
                            exc,
                        )
                        return
                    moved = self.path.with_name(f"{self.path.name}.corrupt-{time.time_ns()}")
                    logger.error(
                        "cache database %s is unreadable (%s); moved to %s", self.path, exc, moved
                    )
                    for suffix in ("", "-wal", "-shm"):
                        source = Path(f"{self.path}{suffix}")
                        if source.exists():
                            source.rename(f"{moved}{suffix}")
                    self._connection()  # the fresh database, made before others look
            except (OSError, sqlite3.Error):
                logger.exception("cache database %s could not be replaced", self.path)

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection to the file now at the path (it may have been replaced)."""
        local = self._local
        inode = self._inode()
        connection: sqlite3.Connection | None = getattr(local, "connection", None)
        if connection is not None and (
            local.generation != self._generation or local.inode != inode
        ):
            connection.close()
            local.connection = connection = None
        if connection is None:
            connection = self._connect()
            # Taken before connecting, so that if the file changed meanwhile the next call
            # reconnects; unless connecting made the file.
            if inode is None:
                inode = self._inode()
            local.connection, local.generation, local.inode = connection, self._generation, inode
        return connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # Shared: while it is held no process moves the file aside, so the write goes to
        # the database now at the path, never to one being set aside.
        with self._flock(fcntl.LOCK_SH), transaction(self._connection()) as db:
            yield db

    def _safely(self, what: str, action: Callable[[], T], default: T, *, strict: bool = False) -> T:
        """Run a store action; a broken database is reset and the action answers ``default``.

        A disk refusing the write (full, read-only) is logged in one line and, if
        ``strict``, raised as a StorageError for the client.
        """
        try:
            return action()
        except sqlite3.DatabaseError as exc:
            problem = StorageError.of(exc, f"the cache {what}", directory=self.path.parent)
            if problem is not None:
                logger.warning("cache %s failed: %s (%s)", what, exc, problem.title)
                if strict:
                    raise problem from exc
                return default
            logger.exception("cache %s failed", what)
            if not isinstance(exc, sqlite3.OperationalError):
                self._quarantine(exc)
                self._memory = MemoryLRU(self._memory.max_bytes)
            return default

    def _payload(self, sql: str, params: tuple[str, ...]) -> bytes | None:
        """The first column of the row ``sql`` selects, checked against the second (its
        sha256); None when there is no row. Raises CorruptPayloadError on a mismatch."""
        row = self._connection().execute(sql, params).fetchone()
        if row is None:
            return None
        data = bytes(row[0])
        if sha256(data) != row[1]:
            raise CorruptPayloadError
        return data

    # -- operations ------------------------------------------------------------------

    def usable(self) -> bool:
        """Whether the database answers a query and accepts a write."""
        return self.storage_problem() is None

    def storage_problem(self) -> str | None:
        """Why the store cannot take writes now (a sentence for ``/readyz``), or None.

        Cheap, but it blocks: the file system's flags and free space, then one small write
        that waits at most PROBE_BUSY_MS for a lock another process holds.
        """
        folder = self.path.parent
        try:
            fs = os.statvfs(folder)
        except OSError as exc:
            return f"the data directory {folder} cannot be read: {exc.strerror}"
        if fs.f_flag & os.ST_RDONLY or not os.access(folder, os.W_OK):
            return f"the data directory {folder} is read-only or not writable by the service"
        free = fs.f_bavail * fs.f_frsize
        if free < MIN_FREE_BYTES:
            return (
                f"the data directory {folder} is full: {free} bytes free, "
                f"{MIN_FREE_BYTES} needed at least"
            )

        def probe() -> None:
            db = self._connection()
            db.execute(f"PRAGMA busy_timeout={PROBE_BUSY_MS}")
            try:
                with self._transaction() as tx:
                    tx.execute(
                        "INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (time.time(),)
                    )
            finally:
                db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")

        try:
            probe()
        except sqlite3.Error as exc:
            problem = StorageError.of(exc, "a probe write", directory=folder)
            if problem is not None:
                return problem.detail
            if not isinstance(exc, sqlite3.OperationalError):
                self._quarantine(exc)
                self._memory = MemoryLRU(self._memory.max_bytes)
            return f"the cache database does not accept a write: {exc}"
        except OSError as exc:
            return f"the cache database does not accept a write: {exc.strerror}"
        return None

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
        fd = getattr(self._local, "lock_fd", None)
        if fd is not None:
            os.close(fd)
            self._local.lock_fd = None
