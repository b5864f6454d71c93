"""The result cache: benchmark responses, fitted models and plots, by request hash.

An embedded SQLite database (``<data_dir>/cache.sqlite3``, WAL mode) holds everything,
so every write is one atomic transaction that several processes can share, and a
process killed mid-write leaves each entry whole or absent. Each payload carries its
sha256, checked on read: a corrupt entry is logged, dropped and recomputed, and a
database file that cannot be read at all is moved aside and started afresh. Nothing is
ever unpickled: models are ``.npz`` bytes read with ``allow_pickle=False``.

Several processes may share the file. Moving a broken one aside happens under an
exclusive ``flock`` on ``cache.sqlite3.lock`` and only once the file is seen broken
again under that lock (another process may have replaced it already), and every write
holds the lock shared and goes to the file now at the path, never to one moved aside.
A write the disk refuses (full, read-only) raises a :class:`StorageError` for the
client, and :meth:`ResultStore.storage_problem` says so to ``/readyz`` until it passes.

Leases (one computation per question across processes) are short and renewed by their
owner, and name the owner's process: a lease whose process died is free at once.

A small LRU layer in memory keeps hot responses and plots as bytes, so a hit is served
without touching the disk or re-serialising anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import orjson

from service import processes
from service.benchmark import DEFAULT_ESTIMATOR, FittedModel
from service.errors import MIN_FREE_BYTES, StorageError
from service.sqlite import transaction
from service.tables import Preprocessing

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

# A hit refreshes its entry's access time on disk at most this often (seconds).
ACCESS_RESOLUTION_S = 30.0
# How long the readiness probe waits for a database another process has locked.
PROBE_BUSY_MS = 1000


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _CorruptPayloadError(Exception):
    """A stored payload does not match its checksum."""


@dataclass
class StoredBenchmark:
    """A computed benchmark: its response body (as first computed) and fitted models.

    ``body`` is the JSON response with ``"cached": false``; ``hit_body`` the same with
    ``"cached": true``. ``models`` is filled when the entry was just computed.
    """

    id: str
    body: bytes
    hit_body: bytes
    models: dict[str, FittedModel] = field(default_factory=dict)
    _parsed: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def from_body(
        cls, benchmark_id: str, body: bytes, models: dict[str, FittedModel] | None = None
    ) -> StoredBenchmark:
        # "id" is the body's first key and holds only hex, so the first "cached" is its own.
        hit_body = body.replace(b'"cached":false', b'"cached":true', 1)
        return cls(id=benchmark_id, body=body, hit_body=hit_body, models=models or {})

    @property
    def data(self) -> dict[str, Any]:
        """The body parsed (once), for the routes that need its fields."""
        if self._parsed is None:
            self._parsed = orjson.loads(self.body)
        return self._parsed


def model_to_bytes(model: FittedModel) -> bytes:
    """A model as ``.npz`` bytes: arrays and scalars only, no pickled objects."""
    arrays: dict[str, np.ndarray] = {
        "init": np.asarray(model.init),
        "n_clusters": np.asarray(model.n_clusters),
        "n_features": np.asarray(model.n_features),
        "cluster_centers": model.cluster_centers,
        "inertia": np.asarray(model.inertia),
        "n_iter": np.asarray(-1 if model.n_iter is None else model.n_iter),
    }
    if model.scaler_mean is not None and model.scaler_scale is not None:
        arrays["scaler_mean"] = model.scaler_mean
        arrays["scaler_scale"] = model.scaler_scale
    arrays["estimator"] = np.asarray(model.estimator)
    if model.feature_names is not None:
        arrays["feature_names"] = np.asarray(model.feature_names, dtype=str)
    for name in _OPTIONAL_ARRAYS:
        value = getattr(model, name)
        if value is not None:
            arrays[name] = value
    arrays["n_train"] = np.asarray(model.n_train)
    if model.normalize:
        arrays["normalize"] = np.asarray(True)
    if model.preprocessing is not None:
        # Plain JSON in a unicode scalar: nothing to unpickle.
        arrays["preprocessing"] = np.asarray(json.dumps(model.preprocessing.as_dict()))
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def model_from_bytes(data: bytes) -> FittedModel:
    """Read :func:`model_to_bytes` back, refusing anything that would need unpickling."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return FittedModel(
            init=str(npz["init"]),
            n_clusters=int(npz["n_clusters"]),
            n_features=int(npz["n_features"]),
            cluster_centers=np.asarray(npz["cluster_centers"], dtype=np.float64),
            scaler_mean=npz["scaler_mean"] if "scaler_mean" in npz.files else None,
            scaler_scale=npz["scaler_scale"] if "scaler_scale" in npz.files else None,
            inertia=float(npz["inertia"]),
            n_iter=None if int(npz["n_iter"]) < 0 else int(npz["n_iter"]),
            # Models stored before these were kept have none of them.
            estimator=str(npz["estimator"]) if "estimator" in npz.files else DEFAULT_ESTIMATOR,
            feature_names=(
                tuple(str(n) for n in npz["feature_names"])
                if "feature_names" in npz.files
                else None
            ),
            **{name: npz[name] for name in _OPTIONAL_ARRAYS if name in npz.files},
            n_train=int(npz["n_train"]) if "n_train" in npz.files else 0,
            normalize="normalize" in npz.files and bool(npz["normalize"]),
            preprocessing=(
                Preprocessing.from_dict(json.loads(str(npz["preprocessing"])))
                if "preprocessing" in npz.files
                else None
            ),
        )


_OPTIONAL_ARRAYS = ("cluster_sizes", "cluster_means", "cluster_stds", "distance_tail")


class ResultBackend(Protocol):
    """What the engine needs of a result store: :class:`ResultStore` (embedded SQLite)
    or :class:`service.redis_store.RedisResultStore` (shared by replicas)."""

    max_bytes: int
    corrupt_entries: int
    lease_ttl_s: float
    lease_renew_s: float

    def peek(self, benchmark_id: str) -> StoredBenchmark | None: ...
    def touch_due(self, benchmark_id: str) -> bool: ...
    def touch(self, benchmark_id: str) -> None: ...
    def get(self, benchmark_id: str) -> StoredBenchmark | None: ...
    def put(self, entry: StoredBenchmark) -> None: ...
    def delete(self, benchmark_id: str) -> bool: ...
    def users_of(self, model_ids: Sequence[str]) -> dict[str, set[str]]: ...
    def page(
        self,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        among: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]: ...
    def get_plot(self, benchmark_id: str, key: str) -> bytes | None: ...
    def put_plot(self, benchmark_id: str, key: str, png: bytes) -> None: ...
    def get_model(self, model_id: str) -> FittedModel | None: ...
    def try_lease(self, key: str, owner: str, ttl_s: float) -> bool: ...
    def renew_lease(self, key: str, owner: str, ttl_s: float) -> bool: ...
    def release(self, key: str, owner: str) -> None: ...
    def usable(self) -> bool: ...
    def storage_problem(self) -> str | None: ...
    def total_bytes(self) -> int: ...
    def get_document(self, kind: str, key: str) -> bytes | None: ...
    def put_document(self, kind: str, key: str, data: bytes) -> None: ...
    def close(self) -> None: ...


class _MemoryLayer:
    """A byte-bounded LRU of hot values, shared by this process's threads."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: tuple[str, str], value: Any, size: int) -> None:
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def discard(self, key: tuple[str, str]) -> None:
        with self._lock:
            item = self._items.pop(key, None)
            if item is not None:
                self._bytes -= item[1]

    def drop(self, benchmark_id: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k[1] == benchmark_id]:
                self._bytes -= self._items.pop(key)[1]


class ResultStore:
    """Benchmarks, models and plots under ``<data_dir>/cache.sqlite3``, LRU-bounded.

    Parameters
    ----------
    path : Path
        The SQLite file.
    max_bytes : int
        Bound on the stored payloads; the least recently used benchmarks (with their
        plots, and models no other benchmark uses) are evicted past it.
    memory_bytes : int
        Bound on the in-process layer of hot responses and plots.
    """

    def __init__(self, path: Path, *, max_bytes: int, memory_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._memory = _MemoryLayer(memory_bytes)
        self._local = threading.local()
        self._generation = 0
        self._lock = threading.Lock()
        self._access_written: dict[str, float] = {}
        self.corrupt_entries = 0
        self._open_or_reset()

    # Leases live this long unless their owner renews them, which it does this often.
    lease_ttl_s = 10.0
    lease_renew_s = 3.0

    # -- connections -------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA busy_timeout=30000")
        connection.executescript(SCHEMA)
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
                self._memory = _MemoryLayer(self._memory.max_bytes)
            return default

    # -- benchmarks -------------------------------------------------------------

    def peek(self, benchmark_id: str) -> StoredBenchmark | None:
        """The benchmark if it is in the memory layer: no disk access, safe on the event loop."""
        hot: StoredBenchmark | None = self._memory.get(("benchmark", benchmark_id))
        return hot

    def touch_due(self, benchmark_id: str) -> bool:
        """Whether a hit on ``benchmark_id`` should refresh its access time on disk."""
        last = self._access_written.get(benchmark_id, 0.0)
        return time.time() - last >= ACCESS_RESOLUTION_S

    def touch(self, benchmark_id: str) -> None:
        """Record a use of ``benchmark_id`` for the LRU eviction (a disk write)."""
        self._touch(benchmark_id, force=True)

    def get(self, benchmark_id: str) -> StoredBenchmark | None:
        """The stored benchmark, or None (absent, evicted or corrupt)."""
        hot = self.peek(benchmark_id)
        if hot is not None:
            return hot
        found = self._safely("read", lambda: self._read_benchmark(benchmark_id), None)
        if found is not None:
            self._memory.put(("benchmark", benchmark_id), found, 2 * len(found.body))
        return found

    def _payload(self, sql: str, params: tuple[str, ...]) -> bytes | None:
        """The first column of the row ``sql`` selects, checked against the second (its
        sha256); None when there is no row. Raises _CorruptPayloadError on a mismatch."""
        row = self._connection().execute(sql, params).fetchone()
        if row is None:
            return None
        data = bytes(row[0])
        if _sha(data) != row[1]:
            raise _CorruptPayloadError
        return data

    def _read_benchmark(self, benchmark_id: str) -> StoredBenchmark | None:
        try:
            body = self._payload("SELECT body, sha FROM benchmarks WHERE id = ?", (benchmark_id,))
            if body is None:
                return None
            if not body.startswith(b'{"id":"' + benchmark_id.encode()):
                raise _CorruptPayloadError
        except _CorruptPayloadError:
            self._drop_corrupt(benchmark_id, "benchmark")
            return None
        self._touch(benchmark_id, force=True)
        return StoredBenchmark.from_body(benchmark_id, body)

    def put(self, entry: StoredBenchmark) -> None:
        """Store a computed benchmark and its models in one transaction, then evict.

        Raises StorageError when the disk refuses the write (full, read-only): the entry
        is then neither on disk nor in memory, as its models could not be served.
        """
        self._safely("write", lambda: self._write_benchmark(entry), None, strict=True)
        self._memory.put(("benchmark", entry.id), entry, 2 * len(entry.body))

    def _write_benchmark(self, entry: StoredBenchmark) -> None:
        models = {mid: model_to_bytes(model) for mid, model in entry.models.items()}
        size = len(entry.body) + sum(len(data) for data in models.values())
        now = time.time()
        with self._transaction() as db:
            # Stored again (another process computed it too): it keeps its first time.
            db.execute(
                "INSERT OR REPLACE INTO benchmarks (id, body, sha, size, accessed, created)"
                " VALUES (?, ?, ?, ?, ?,"
                " COALESCE((SELECT created FROM benchmarks WHERE id = ?), ?))",
                (entry.id, entry.body, _sha(entry.body), size, now, entry.id, now),
            )
            for mid, data in models.items():
                db.execute(
                    "INSERT OR REPLACE INTO models (id, data, sha) VALUES (?, ?, ?)",
                    (mid, data, _sha(data)),
                )
                db.execute(
                    "INSERT OR IGNORE INTO benchmark_models (benchmark_id, model_id) VALUES (?, ?)",
                    (entry.id, mid),
                )
        self._access_written[entry.id] = now
        self._safely("eviction", self._evict, None)  # the entry is stored whatever it says

    def _touch(self, benchmark_id: str, *, force: bool = False) -> None:
        """Record a use for LRU eviction, writing at most once per ACCESS_RESOLUTION_S."""
        now = time.time()
        if not force and now - self._access_written.get(benchmark_id, 0.0) < ACCESS_RESOLUTION_S:
            return
        self._access_written[benchmark_id] = now

        def write() -> None:
            with self._transaction() as db:
                db.execute("UPDATE benchmarks SET accessed = ? WHERE id = ?", (now, benchmark_id))

        self._safely("access update", write, None)

    def _evict(self) -> None:
        db = self._connection()
        total = db.execute("SELECT COALESCE(SUM(size), 0) FROM benchmarks").fetchone()[0]
        if total <= self.max_bytes:
            return
        victims = []
        for benchmark_id, size in db.execute(
            "SELECT id, size FROM benchmarks ORDER BY accessed ASC, id ASC"
        ).fetchall():
            if total <= self.max_bytes:
                break
            victims.append(benchmark_id)
            total -= size
        for benchmark_id in victims:
            self._delete(benchmark_id)
        logger.info("evicted %d benchmark(s) to stay under %d bytes", len(victims), self.max_bytes)

    def _delete(self, benchmark_id: str) -> None:
        """Remove a benchmark, its plots, and the models no other benchmark uses."""
        with self._transaction() as db:
            model_ids = [
                row[0]
                for row in db.execute(
                    "SELECT model_id FROM benchmark_models WHERE benchmark_id = ?",
                    (benchmark_id,),
                )
            ]
            db.execute("DELETE FROM benchmarks WHERE id = ?", (benchmark_id,))
            db.execute("DELETE FROM plots WHERE benchmark_id = ?", (benchmark_id,))
            db.execute("DELETE FROM benchmark_models WHERE benchmark_id = ?", (benchmark_id,))
            gone = [
                mid
                for mid in model_ids
                if db.execute(
                    "DELETE FROM models WHERE id = ? AND NOT EXISTS"
                    " (SELECT 1 FROM benchmark_models WHERE model_id = ?)",
                    (mid, mid),
                ).rowcount
            ]
        self._memory.drop(benchmark_id)
        for mid in gone:  # else a model deleted on disk would still be served from memory
            self._memory.discard(("model", mid))
        self._access_written.pop(benchmark_id, None)

    def delete(self, benchmark_id: str) -> bool:
        """Remove a benchmark with its plots and models (those no other benchmark uses);
        whether it was stored. Raises StorageError when the disk refuses the write."""

        def delete() -> bool:
            found = (
                self._connection()
                .execute("SELECT 1 FROM benchmarks WHERE id = ?", (benchmark_id,))
                .fetchone()
            )
            self._delete(benchmark_id)
            return found is not None

        return self._safely("delete", delete, False, strict=True)

    def users_of(self, model_ids: Sequence[str]) -> dict[str, set[str]]:
        """The stored benchmarks that use each of ``model_ids`` (benchmarks share models)."""

        def read() -> dict[str, set[str]]:
            users: dict[str, set[str]] = {mid: set() for mid in model_ids}
            rows = self._connection().execute(
                "SELECT model_id, benchmark_id FROM benchmark_models"
                f" WHERE model_id IN ({', '.join('?' * len(model_ids))})",
                tuple(model_ids),
            )
            for model_id, benchmark_id in rows:
                users[model_id].add(benchmark_id)
            return users

        return self._safely("model users", read, {mid: set() for mid in model_ids})

    def page(
        self,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        among: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Up to ``limit`` (id, created) of stored benchmarks, newest first, older than
        ``before`` (a (created, id) from a previous page); only ids in ``among`` if given."""
        where: list[str] = []
        args: list[Any] = []
        if among is not None:
            where.append(f"id IN ({', '.join('?' * len(among))})")
            args.extend(among)
        if before is not None:
            where.append("(created, id) < (?, ?)")
            args.extend(before)
        sql = "SELECT id, created FROM benchmarks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, id DESC LIMIT ?"

        def read() -> list[tuple[str, float]]:
            rows = self._connection().execute(sql, (*args, limit)).fetchall()
            return [(row[0], float(row[1])) for row in rows]

        return self._safely("list", read, [])

    def _drop_corrupt(self, benchmark_id: str, what: str) -> None:
        self.corrupt_entries += 1
        logger.warning(
            "corrupt cached %s for benchmark %s: dropped, will recompute", what, benchmark_id
        )
        self._delete(benchmark_id)

    # -- plots and models ---------------------------------------------------------

    def get_plot(self, benchmark_id: str, key: str) -> bytes | None:
        hot = self._memory.get(("plot:" + key, benchmark_id))
        if hot is not None:
            png: bytes = hot
            return png

        def read() -> bytes | None:
            try:
                return self._payload(
                    "SELECT png, sha FROM plots WHERE benchmark_id = ? AND key = ?",
                    (benchmark_id, key),
                )
            except _CorruptPayloadError:
                self.corrupt_entries += 1
                logger.warning("corrupt cached plot %s/%s: dropped", benchmark_id, key)
                with self._transaction() as db:
                    db.execute(
                        "DELETE FROM plots WHERE benchmark_id = ? AND key = ?", (benchmark_id, key)
                    )
                return None

        found = self._safely("plot read", read, None)
        if found is not None:
            self._memory.put(("plot:" + key, benchmark_id), found, len(found))
        return found

    def put_plot(self, benchmark_id: str, key: str, png: bytes) -> None:
        self._memory.put(("plot:" + key, benchmark_id), png, len(png))

        def write() -> None:
            with self._transaction() as db:
                # Another process may have stored this plot already: count its bytes once.
                old = db.execute(
                    "SELECT COALESCE(SUM(length(png)), 0) FROM plots"
                    " WHERE benchmark_id = ? AND key = ?",
                    (benchmark_id, key),
                ).fetchone()[0]
                updated = db.execute(
                    "UPDATE benchmarks SET size = size + ? WHERE id = ?",
                    (len(png) - old, benchmark_id),
                ).rowcount
                if updated:
                    db.execute(
                        "INSERT OR REPLACE INTO plots (benchmark_id, key, png, sha)"
                        " VALUES (?, ?, ?, ?)",
                        (benchmark_id, key, png, _sha(png)),
                    )
            self._evict()

        self._safely("plot write", write, None)

    def get_model(self, model_id: str) -> FittedModel | None:
        hot = self._memory.get(("model", model_id))
        if hot is not None:
            model: FittedModel = hot
            return model

        def read() -> FittedModel | None:
            try:
                data = self._payload("SELECT data, sha FROM models WHERE id = ?", (model_id,))
                return None if data is None else model_from_bytes(data)
            except (_CorruptPayloadError, ValueError, OSError, KeyError) as exc:
                self.corrupt_entries += 1
                logger.warning("corrupt cached model %s (%s): dropped", model_id, exc)
                with self._transaction() as db:
                    db.execute("DELETE FROM models WHERE id = ?", (model_id,))
                return None

        found = self._safely("model read", read, None)
        if found is not None:
            self._memory.put(("model", model_id), found, found.nbytes)
        return found

    # -- leases: one computation per question across processes -------------------------

    def try_lease(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take the lease on ``key`` unless another owner holds it: unexpired, and held
        by a process that runs, as far as this host can tell."""
        process = processes.this_process()

        def take() -> bool:
            now = time.time()
            with self._transaction() as db:
                row = db.execute(
                    "SELECT owner, expires, process FROM leases WHERE key = ?", (key,)
                ).fetchone()
                if row is not None:
                    if row[1] >= now:
                        if processes.process_alive(row[2]):
                            return False
                        logger.warning(
                            "lease on %s held by %s, whose process (%s) is gone: taken over",
                            key,
                            row[0],
                            row[2],
                        )
                    db.execute("DELETE FROM leases WHERE key = ?", (key,))
                db.execute(
                    "INSERT INTO leases (key, owner, expires, process) VALUES (?, ?, ?, ?)",
                    (key, owner, now + ttl_s, process),
                )
            return True

        # A store that cannot say who computes lets everyone compute.
        return self._safely("lease", take, True)

    def renew_lease(self, key: str, owner: str, ttl_s: float) -> bool:
        """Extend ``owner``'s lease on ``key`` by ``ttl_s`` from now; False if it lost it."""

        def extend() -> bool:
            with self._transaction() as db:
                return bool(
                    db.execute(
                        "UPDATE leases SET expires = ? WHERE key = ? AND owner = ?",
                        (time.time() + ttl_s, key, owner),
                    ).rowcount
                )

        return self._safely("lease renewal", extend, True)

    def release(self, key: str, owner: str) -> None:
        def drop() -> None:
            with self._transaction() as db:
                db.execute("DELETE FROM leases WHERE key = ? AND owner = ?", (key, owner))

        self._safely("lease release", drop, None)

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
                db.execute("PRAGMA busy_timeout=30000")

        try:
            probe()
        except sqlite3.Error as exc:
            problem = StorageError.of(exc, "a probe write", directory=folder)
            if problem is not None:
                return problem.detail
            if not isinstance(exc, sqlite3.OperationalError):
                self._quarantine(exc)
                self._memory = _MemoryLayer(self._memory.max_bytes)
            return f"the cache database does not accept a write: {exc}"
        except OSError as exc:
            return f"the cache database does not accept a write: {exc.strerror}"
        return None

    def total_bytes(self) -> int:
        return self._safely(
            "size",
            lambda: int(
                self._connection()
                .execute("SELECT COALESCE(SUM(size), 0) FROM benchmarks")
                .fetchone()[0]
            ),
            0,
        )

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
        fd = getattr(self._local, "lock_fd", None)
        if fd is not None:
            os.close(fd)
            self._local.lock_fd = None

    # -- documents: sweeps, stability runs and their plots, by kind and id ------------
    # A table of their own beside the benchmarks' (added, not reshaped), bounded by the
    # same max_bytes with its own LRU.

    def _documents(self) -> sqlite3.Connection:
        db = self._connection()
        if getattr(self._local, "documents_ready", None) != self._generation:
            db.executescript(DOCUMENTS_SCHEMA)
            self._local.documents_ready = self._generation
        return db

    def get_document(self, kind: str, key: str) -> bytes | None:
        """The bytes stored under (kind, key), or None (absent, evicted or corrupt)."""
        hot: bytes | None = self._memory.get((kind, key))
        if hot is not None:
            return hot

        def read() -> bytes | None:
            db = self._documents()
            row = db.execute(
                "SELECT data, sha FROM documents WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
            if row is None:
                return None
            data = bytes(row[0])
            if _sha(data) != row[1]:
                self.corrupt_entries += 1
                logger.warning("corrupt cached %s %s: dropped, will recompute", kind, key)
                with self._transaction() as tx:
                    tx.execute("DELETE FROM documents WHERE kind = ? AND key = ?", (kind, key))
                return None
            with self._transaction() as tx:
                tx.execute(
                    "UPDATE documents SET accessed = ? WHERE kind = ? AND key = ?",
                    (time.time(), kind, key),
                )
            return data

        found = self._safely(f"{kind} read", read, None)
        if found is not None:
            self._memory.put((kind, key), found, len(found))
        return found

    def put_document(self, kind: str, key: str, data: bytes) -> None:
        """Store ``data`` under (kind, key), then evict the least recently used past the bound."""
        self._memory.put((kind, key), data, len(data))

        def write() -> None:
            db = self._documents()
            with self._transaction() as tx:
                tx.execute(
                    "INSERT OR REPLACE INTO documents (kind, key, data, sha, size, accessed)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (kind, key, data, _sha(data), len(data), time.time()),
                )
            total = db.execute("SELECT COALESCE(SUM(size), 0) FROM documents").fetchone()[0]
            if total <= self.max_bytes:
                return
            victims = []
            for victim_kind, victim_key, size in db.execute(
                "SELECT kind, key, size FROM documents ORDER BY accessed ASC"
            ).fetchall():
                if total <= self.max_bytes:
                    break
                victims.append((victim_kind, victim_key))
                total -= size
            with self._transaction() as tx:
                tx.executemany("DELETE FROM documents WHERE kind = ? AND key = ?", victims)

        self._safely(f"{kind} write", write, None)


DOCUMENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    data BLOB NOT NULL,
    sha TEXT NOT NULL,
    size INTEGER NOT NULL,
    accessed REAL NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX IF NOT EXISTS documents_accessed ON documents (accessed);
"""
