"""What the service needs of a result store, one small interface per role.

Two backends implement every role: :class:`service.store.ResultStore` (embedded SQLite,
one host) and :class:`service.redis_store.RedisResultStore` (Redis, shared by replicas).
A caller types against the role it uses; :class:`ResultBackend` is all of them, what the
engine holds. ``tests/test_store.py`` exercises each role's methods on both backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from service.benchmark import FittedModel
    from service.store import StoredBenchmark

# A hit refreshes its entry's access time in storage at most this often (seconds).
ACCESS_RESOLUTION_S = 30.0


class ResultCache(Protocol):
    """Computed benchmarks by id, bounded by ``max_bytes`` (least recently used go)."""

    max_bytes: int
    corrupt_entries: int

    def peek(self, benchmark_id: str) -> StoredBenchmark | None:
        """The benchmark if it is in memory: no I/O, safe on the event loop."""

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
    def total_bytes(self) -> int: ...


class BlobStore(Protocol):
    """What a stored benchmark carries beside its body: plots by key, fitted models by id."""

    def get_plot(self, benchmark_id: str, key: str) -> bytes | None: ...
    def put_plot(self, benchmark_id: str, key: str, png: bytes) -> None: ...
    def get_model(self, model_id: str) -> FittedModel | None: ...


class DocumentStore(Protocol):
    """Sweeps, stability runs and their plots: bytes by (kind, key), LRU-bounded."""

    def get_document(self, kind: str, key: str) -> bytes | None: ...
    def put_document(self, kind: str, key: str, data: bytes) -> None: ...


class Leases(Protocol):
    """One computation per question across processes: short leases their owner renews
    every ``lease_renew_s``, which lapse ``lease_ttl_s`` after the last renewal."""

    lease_ttl_s: float
    lease_renew_s: float

    def try_lease(self, key: str, owner: str, ttl_s: float) -> bool: ...
    def renew_lease(self, key: str, owner: str, ttl_s: float) -> bool: ...
    def release(self, key: str, owner: str) -> None: ...


class StorageHealth(Protocol):
    """Whether the store takes writes now, for ``/readyz``."""

    def usable(self) -> bool: ...
    def storage_problem(self) -> str | None: ...


class ResultBackend(ResultCache, BlobStore, DocumentStore, Leases, StorageHealth, Protocol):
    """Every role at once: what the engine holds, and what the service closes on shutdown."""

    def close(self) -> None: ...
