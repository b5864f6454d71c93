"""The result cache: benchmark responses, fitted models and plots, by request hash.

An embedded SQLite database (``<data_dir>/cache.sqlite3``, WAL mode) holds everything,
so every write is one atomic transaction that several processes can share, and a
process killed mid-write leaves each entry whole or absent. Each payload carries its
sha256, checked on read: a corrupt entry is logged, dropped and recomputed, and a
database file that cannot be read at all is moved aside and started afresh. Nothing is
ever unpickled: models are ``.npz`` bytes read with ``allow_pickle=False``.

The file itself (connections, locks, a broken file moved aside, ``/readyz``) is
:mod:`service.cache_db`; leases and documents are layers of their own on it
(:mod:`service.store_leases`, :mod:`service.store_documents`). Hot responses, plots and
models are kept in memory too (:class:`service.memory.MemoryLRU`), so a hit is served
without touching the disk or re-serialising anything.
"""

from __future__ import annotations

import io
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from service.benchmark import DEFAULT_ESTIMATOR, FittedModel
from service.cache_db import CorruptPayloadError, sha256
from service.result_backend import ACCESS_RESOLUTION_S
from service.schemas import BenchmarkResult
from service.schemas.common import answer_forms, hit_form
from service.sqlite import one_of, page_query
from service.store_documents import SQLiteDocuments
from service.store_leases import SQLiteLeases
from service.tables import Preprocessing

logger = logging.getLogger(__name__)


@dataclass
class StoredBenchmark:
    """A computed benchmark: its answer and its fitted models.

    The answer is the :class:`~service.schemas.BenchmarkResult`'s JSON, dumped when it is
    computed in two forms: as first answered (``first_body``, ``"cached": false``) and as
    stored (``body``, ``"cached": true``), which every hit sends as it is, unparsed
    (``hit_body``). ``models`` is filled when the entry was just computed; :attr:`answer`
    is the model, parsed from the stored bytes when an entry is read back.
    """

    id: str
    body: bytes
    hit_body: bytes
    models: dict[str, FittedModel] = field(default_factory=dict)
    first_body: bytes | None = None
    _answer: BenchmarkResult | None = field(default=None, repr=False)

    @classmethod
    def from_answer(
        cls, answer: BenchmarkResult, models: dict[str, FittedModel] | None = None
    ) -> StoredBenchmark:
        """A just-computed answer (``cached`` false) with its models."""
        first, stored = answer_forms(answer)
        return cls(
            id=answer.id,
            body=stored,
            hit_body=stored,
            models=models or {},
            first_body=first,
            _answer=answer,
        )

    @classmethod
    def from_body(
        cls, benchmark_id: str, body: bytes, models: dict[str, FittedModel] | None = None
    ) -> StoredBenchmark:
        """An entry as the store holds it, sent on a hit as :func:`hit_form` says."""
        hit = hit_form(benchmark_id, body)
        return cls(id=benchmark_id, body=body, hit_body=hit, models=models or {})

    def answered(self, cached: bool) -> bytes:
        """The bytes to send: the stored form on a hit, else the first answer."""
        return self.hit_body if cached or self.first_body is None else self.first_body

    def without_models(self) -> StoredBenchmark:
        """The entry as a memory layer keeps it: the answer alone. Its models are read
        back each under its own key, counted in its own bytes; kept here they were
        counted as nothing (the two of a 100k x 50k sparse benchmark are 22 MB)."""
        return replace(self, models={}) if self.models else self

    @property
    def answer(self) -> BenchmarkResult:
        """The answer as its model (parsed once from the stored bytes)."""
        if self._answer is None:
            self._answer = BenchmarkResult.model_validate_json(self.hit_body)
        return self._answer


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


class BenchmarkListing(ABC):
    """The stored benchmarks a page at a time, as both result stores list them (this one
    and :class:`service.redis_store.RedisResultStore`): what a page is, said once here;
    each store reads one in :meth:`_page`."""

    def page(
        self,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        among: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Up to ``limit`` (id, created) of stored benchmarks, newest first, older than
        ``before`` (a (created, id) from a previous page); only ids in ``among`` if given."""
        return self._page(limit, before, among)

    @abstractmethod
    def _page(
        self, limit: int, before: tuple[float, str] | None, among: Sequence[str] | None
    ) -> list[tuple[str, float]]: ...


class ResultStore(SQLiteLeases, SQLiteDocuments, BenchmarkListing):
    """Benchmarks, models and plots under ``<data_dir>/cache.sqlite3``, LRU-bounded: every
    role of :class:`service.result_backend.ResultBackend` on one SQLite file.

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
        self.max_bytes = max_bytes
        super().__init__(path, memory_bytes=memory_bytes)

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

    def _read_benchmark(self, benchmark_id: str) -> StoredBenchmark | None:
        try:
            body = self._payload("SELECT body, sha FROM benchmarks WHERE id = ?", (benchmark_id,))
            if body is None:
                return None
            if not body.startswith(b'{"id":"' + benchmark_id.encode()):
                raise CorruptPayloadError
        except CorruptPayloadError:
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
        self._memory.put(("benchmark", entry.id), entry.without_models(), 2 * len(entry.body))

    def _write_benchmark(self, entry: StoredBenchmark) -> None:
        now = time.time()
        with self._transaction() as db:
            # Stored again (another process computed it too): it keeps its first time.
            db.execute(
                "INSERT OR REPLACE INTO benchmarks (id, body, sha, size, accessed, created)"
                " VALUES (?, ?, ?, ?, ?,"
                " COALESCE((SELECT created FROM benchmarks WHERE id = ?), ?))",
                (entry.id, entry.body, sha256(entry.body), len(entry.body), now, entry.id, now),
            )
            # One model's bytes at a time: a model of wide data is megabytes (8 clusters
            # of 50,000 columns, 10 MB), and the statement holds a copy of them too.
            size = len(entry.body)
            for mid, model in entry.models.items():
                data = model_to_bytes(model)
                size += len(data)
                db.execute(
                    "INSERT OR REPLACE INTO models (id, data, sha) VALUES (?, ?, ?)",
                    (mid, data, sha256(data)),
                )
                del data
                db.execute(
                    "INSERT OR IGNORE INTO benchmark_models (benchmark_id, model_id) VALUES (?, ?)",
                    (entry.id, mid),
                )
            if entry.models:
                db.execute("UPDATE benchmarks SET size = ? WHERE id = ?", (size, entry.id))
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

    def _page(
        self, limit: int, before: tuple[float, str] | None, among: Sequence[str] | None
    ) -> list[tuple[str, float]]:
        sql, args = page_query(
            "SELECT id, created FROM benchmarks",
            [
                one_of("id", among),
                None if before is None else ("(created, id) < (?, ?)", before),
            ],
            order="created DESC, id DESC",
            limit=limit,
        )

        def read() -> list[tuple[str, float]]:
            rows = self._connection().execute(sql, args).fetchall()
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
            except CorruptPayloadError:
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
                        (benchmark_id, key, png, sha256(png)),
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
            except (CorruptPayloadError, ValueError, OSError, KeyError) as exc:
                self.corrupt_entries += 1
                logger.warning("corrupt cached model %s (%s): dropped", model_id, exc)
                with self._transaction() as db:
                    db.execute("DELETE FROM models WHERE id = ?", (model_id,))
                return None

        found = self._safely("model read", read, None)
        if found is not None:
            self._memory.put(("model", model_id), found, found.nbytes)
        return found

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
