"""The result cache in Redis (``CLUSTERBENCH_REDIS_URL``), shared by any number of replicas.

Every role of :class:`service.result_backend.ResultBackend` (benchmarks, models, plots,
documents, leases, health), as :class:`service.store.ResultStore` has them, so the engine
does not know which one it talks to. Every write that
touches several keys is one Lua script, so a replica killed mid-write leaves each entry
whole or absent, and the indexes (creation order, LRU order, sizes, which benchmarks use
a model) never point at something gone.

**The in-process layer never outlives a delete.** As in the embedded store, hot
responses and plots are kept in memory (``CLUSTERBENCH_MEMORY_CACHE_BYTES``), so a hot
hit costs no round trip: that is what keeps a hit within 2x of ``/healthz`` (a round
trip per hit, with its thread hop, measured 2.25x). Every delete and eviction, by any
replica, publishes the id on ``clusterbench:invalidate`` in the same script; each
replica's listener thread drops it from memory as it arrives (well under a millisecond
on one network). A read that started before an invalidation it did not see is not
kept. While the listener is not subscribed (Redis down or restarting) the layer is
emptied and not used at all, so an outage is a 503 and nothing missed meanwhile is
served afterwards.

**The bound is the service's, not Redis's.** The cache is bounded by
``CLUSTERBENCH_CACHE_MAX_BYTES`` as in the embedded store: the least recently used
benchmarks go, with their plots and the models no other benchmark uses, atomically with
their index entries. Redis's own ``maxmemory-policy`` could not do that: ``allkeys-lru``
would also evict jobs and leases (a running job would vanish, a question would be
computed twice), and ``volatile-lru`` would drop a body while its index entries and
models stay. So Redis runs with ``maxmemory-policy noeviction`` and a ``maxmemory`` above
the cache's bound (a safety net): a Redis that is full refuses writes, which the client
gets as 507, rather than losing state silently. Reads still answer: no read needs a write
(recording a use for the LRU order is best effort).

**Redis down.** Every call has a socket timeout (``CLUSTERBENCH_REDIS_TIMEOUT_S``), and is
not sent again after it; a call that fails raises :class:`StoreUnavailableError` (503
with ``Retry-After``) and ``/readyz`` says why. The connection pool reconnects by itself
once Redis is back.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import redis

from service import processes
from service import redis_scripts as scripts
from service.benchmark import FittedModel
from service.errors import StorageError
from service.memory import MemoryLRU
from service.redis_connection import PREFIX, Guard, connect, newest_first, unavailable
from service.result_backend import ACCESS_RESOLUTION_S
from service.store import BenchmarkListing, StoredBenchmark, model_from_bytes, model_to_bytes

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RedisResultStore(BenchmarkListing):
    """Benchmarks, models, plots, documents and leases in Redis, LRU-bounded.

    Parameters
    ----------
    url : str
        The Redis URL (``redis://host:6379/0``).
    max_bytes : int
        Bound on the stored payloads, as in the embedded store.
    timeout_s : float
        Socket timeout of every Redis call.
    """

    # Leases live this long unless their owner renews them, which it does this often:
    # a dead owner's lease expires within lease_ttl_s (SET NX PX).
    lease_ttl_s = 10.0
    lease_renew_s = 3.0

    def __init__(
        self, url: str, *, max_bytes: int, memory_bytes: int = 0, timeout_s: float = 2.0
    ) -> None:
        self.url = url
        self.max_bytes = max_bytes
        self.corrupt_entries = 0
        self._memory_bytes = memory_bytes
        self._memory = MemoryLRU(memory_bytes)
        self._access_written: dict[str, float] = {}
        # Set while the listener is subscribed: only then is the memory layer used.
        self._live = threading.Event()
        # Bumped by every invalidation and (un)subscription: a read that saw it change
        # is not kept in memory.
        self._generation = 0
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._listener: threading.Thread | None = None
        # Any: redis-py's types mix its sync and async replies.
        self.redis: Any = connect(url, timeout_s=timeout_s)
        self._call = Guard(url, timeout_s)
        self._put = self.redis.register_script(scripts.PUT)
        self._delete_script = self.redis.register_script(scripts.DELETE)
        self._put_plot = self.redis.register_script(scripts.PUT_PLOT)
        self._put_document = self.redis.register_script(scripts.PUT_DOCUMENT)
        self._renew = self.redis.register_script(scripts.RENEW)
        self._release = self.redis.register_script(scripts.RELEASE)
        self._delete_if = self.redis.register_script(scripts.DELETE_IF)
        if memory_bytes > 0:
            self._listener = threading.Thread(
                target=self._listen, name="redis invalidations", daemon=True
            )
            self._listener.start()

    # -- the in-process layer ----------------------------------------------------

    def _forget_all(self) -> None:
        with self._lock:
            self._live.clear()
            self._generation += 1
            self._memory = MemoryLRU(self._memory_bytes)
            self._access_written.clear()  # deletes may have been missed meanwhile

    def _listen(self) -> None:
        """Drop from memory what any replica deletes or evicts, for as long as the store
        is open; while not subscribed, keep the memory layer empty and unused."""
        while not self._closing.is_set():
            pubsub = self.redis.pubsub()
            try:
                pubsub.subscribe(PREFIX + "invalidate")
                while not self._closing.is_set():
                    message = pubsub.get_message(timeout=0.1)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._forget_all()  # anything may have changed while away
                        self._live.set()
                    elif message["type"] == "message":
                        gone = message["data"].decode()
                        with self._lock:
                            self._generation += 1
                            self._memory.drop(gone)
                        self._access_written.pop(gone, None)
            except (redis.RedisError, OSError, ValueError) as exc:
                if not self._closing.is_set():
                    logger.warning("the memory layer is off until Redis answers again: %s", exc)
            finally:
                self._forget_all()
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()
            self._closing.wait(0.2)

    def _keep(self, key: tuple[str, str], value: Any, size: int, generation: int) -> None:
        """Keep a value read from Redis, unless an invalidation came since the read began."""
        with self._lock:
            if self._live.is_set() and generation == self._generation:
                self._memory.put(key, value, size)

    def _read_and_touch(self, doing: str, key: str, index: str, member: str) -> Any:
        """The value under ``key``, and ``member``'s use recorded in the LRU ``index`` in
        the same round trip. The record is best effort, as :meth:`touch`: a Redis at its
        ``maxmemory`` refuses it, and the read must not fail for that (every cached GET
        did)."""

        def read() -> Any:
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(PREFIX + key)
            pipe.zadd(PREFIX + index, {member: time.time()}, xx=True)
            value, _ = pipe.execute(raise_on_error=False)
            if isinstance(value, Exception):
                raise value
            return value

        return self._call.read(doing, read)

    # -- benchmarks -------------------------------------------------------------

    def peek(self, benchmark_id: str) -> StoredBenchmark | None:
        """The benchmark if it is in the memory layer (no I/O, safe on the event loop);
        always None while the invalidation listener is not subscribed."""
        if not self._live.is_set():
            return None
        hot: StoredBenchmark | None = self._memory.get(("benchmark", benchmark_id))
        return hot

    def touch_due(self, benchmark_id: str) -> bool:
        """Whether a hit from memory should refresh its entry's LRU position in Redis."""
        return time.time() - self._access_written.get(benchmark_id, 0.0) >= ACCESS_RESOLUTION_S

    def touch(self, benchmark_id: str) -> None:
        """Record a use of ``benchmark_id`` for the LRU eviction; best effort, as in the
        embedded store (a hit from memory does it in a future nobody awaits)."""
        self._access_written[benchmark_id] = time.time()
        with contextlib.suppress(StorageError):  # _call has logged it
            self._call(
                "an access update",
                lambda: self.redis.zadd(PREFIX + "accessed", {benchmark_id: time.time()}, xx=True),
            )

    def get(self, benchmark_id: str) -> StoredBenchmark | None:
        """The stored benchmark, or None (absent or evicted); its use is recorded."""
        hot = self.peek(benchmark_id)
        if hot is not None:
            return hot
        generation = self._generation
        body = self._read_and_touch(
            "a cache read", "bench:" + benchmark_id, "accessed", benchmark_id
        )
        if body is None:
            return None
        self._access_written[benchmark_id] = time.time()
        found = StoredBenchmark.from_body(benchmark_id, bytes(body))
        self._keep(("benchmark", benchmark_id), found, 2 * len(found.body), generation)
        return found

    def put(self, entry: StoredBenchmark) -> None:
        """Store a computed benchmark with its models (one script), then evict."""
        args: list[Any] = [PREFIX, entry.id, entry.body, time.time(), self.max_bytes]
        for mid, model in entry.models.items():
            args += [mid, model_to_bytes(model)]
        generation = self._generation
        evicted = self._call("a cache write", lambda: self._put(args=args))
        self._access_written[entry.id] = time.time()
        self._keep(("benchmark", entry.id), entry.without_models(), 2 * len(entry.body), generation)
        if evicted:
            logger.info("evicted %d benchmark(s) to stay under %d bytes", evicted, self.max_bytes)

    def _delete(self, benchmark_id: str) -> None:
        self.delete(benchmark_id)

    def delete(self, benchmark_id: str) -> bool:
        """Remove a benchmark with its plots and models (those no other benchmark uses);
        whether it was stored. Every replica drops it from memory (the script publishes)."""
        with self._lock:
            self._generation += 1
            self._memory.drop(benchmark_id)
        found = self._call(
            "a cache delete", lambda: self._delete_script(args=[PREFIX, benchmark_id])
        )
        self._memory.drop(benchmark_id)
        self._access_written.pop(benchmark_id, None)
        return bool(found)

    def users_of(self, model_ids: Sequence[str]) -> dict[str, set[str]]:
        """The stored benchmarks that use each of ``model_ids``."""

        def read() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for mid in model_ids:
                pipe.smembers(PREFIX + "users:" + mid)
            return list(pipe.execute())

        found = self._call.read("a model users read", read)
        return {
            mid: {m.decode() for m in members}
            for mid, members in zip(model_ids, found, strict=True)
        }

    def _page(
        self, limit: int, before: tuple[float, str] | None, among: Sequence[str] | None
    ) -> list[tuple[str, float]]:
        # From the ``created`` sorted set: ``among`` by their scores, else in batches.
        key = PREFIX + "created"
        if among is not None:
            ids = list(dict.fromkeys(among))
            scores = self._call.read("a list", lambda: self.redis.zmscore(key, ids) if ids else [])
            rows = sorted(
                ((float(s), i) for i, s in zip(ids, scores, strict=True) if s is not None),
                reverse=True,
            )
            if before is not None:
                rows = [row for row in rows if row < before]
            return [(i, s) for s, i in rows[:limit]]
        out: list[tuple[str, float]] = []
        high: float | str = "+inf" if before is None else before[0]
        batches = newest_first(
            self._call,
            self.redis,
            key,
            high,
            batch=max(limit, 16) + 1,
            doing="a list",
            withscores=True,
        )
        for chunk in batches if limit > 0 else ():
            for member, score in chunk:
                row = (float(score), member.decode())
                if before is not None and row >= before:
                    continue
                out.append((row[1], row[0]))
                if len(out) == limit:
                    return out
        return out

    # -- plots and models ---------------------------------------------------------

    def get_plot(self, benchmark_id: str, key: str) -> bytes | None:
        if self._live.is_set():
            hot: bytes | None = self._memory.get(("plot:" + key, benchmark_id))
            if hot is not None:
                return hot
        generation = self._generation
        found = self._call.read(
            "a plot read", lambda: self.redis.hget(PREFIX + "plots:" + benchmark_id, key)
        )
        if found is None:
            return None
        png = bytes(found)
        self._keep(("plot:" + key, benchmark_id), png, len(png), generation)
        return png

    def put_plot(self, benchmark_id: str, key: str, png: bytes) -> None:
        self._call(
            "a plot write",
            lambda: self._put_plot(args=[PREFIX, benchmark_id, key, png, self.max_bytes]),
        )

    def get_model(self, model_id: str) -> FittedModel | None:
        data = self._call.read("a model read", lambda: self.redis.get(PREFIX + "model:" + model_id))
        if data is None:
            return None
        try:
            return model_from_bytes(bytes(data))
        except (ValueError, OSError, KeyError) as exc:
            self.corrupt_entries += 1
            logger.warning("corrupt cached model %s (%s): treated as absent", model_id, exc)
            return None

    # -- leases: one computation per question across replicas ---------------------------

    def try_lease(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take the lease on ``key`` unless another owner holds it (``SET NX PX``).

        A lease whose process is gone (as far as this host can tell) is taken over at
        once; another host's dead owner's lease expires by itself within ``ttl_s``.
        """
        name = PREFIX + "lease:" + key
        value = f"{owner} {processes.this_process()}"
        ttl_ms = int(ttl_s * 1000)

        def take() -> bool:
            if ttl_ms <= 0:  # a lease that expires at once: taken if free, never held
                held = self.redis.get(name)
                return held is None or not _holder_alive(held)
            if self.redis.set(name, value, nx=True, px=ttl_ms):
                return True
            held = self.redis.get(name)
            if held is not None and not _holder_alive(held):
                logger.warning(
                    "lease on %s held by %s, whose process is gone: taken over", key, held
                )
                self._delete_if(keys=[name], args=[held])
                return bool(self.redis.set(name, value, nx=True, px=ttl_ms))
            return held is None and bool(self.redis.set(name, value, nx=True, px=ttl_ms))

        return self._call("a lease", take)

    def renew_lease(self, key: str, owner: str, ttl_s: float) -> bool:
        """Extend ``owner``'s lease on ``key`` by ``ttl_s`` from now; False if it lost it."""
        name = PREFIX + "lease:" + key
        return bool(
            self._call(
                "a lease renewal",
                lambda: self._renew(keys=[name], args=[owner, max(1, int(ttl_s * 1000))]),
            )
        )

    def release(self, key: str, owner: str) -> None:
        name = PREFIX + "lease:" + key
        self._call("a lease release", lambda: self._release(keys=[name], args=[owner]))

    # -- operations ------------------------------------------------------------------

    def usable(self) -> bool:
        return self.storage_problem() is None

    def storage_problem(self) -> str | None:
        """Why the store cannot take writes now (a sentence for ``/readyz``), or None."""
        try:
            self.redis.set(PREFIX + "probe", time.time())
        except redis.RedisError as exc:
            return unavailable(exc, "a probe write", self.url).detail
        return None

    def total_bytes(self) -> int:
        return int(self._call.read("a size read", lambda: self.redis.get(PREFIX + "total")) or 0)

    def close(self) -> None:
        self._closing.set()
        if self._listener is not None:
            self._listener.join(timeout=5)
        self.redis.close()

    # -- documents: sweeps, stability runs and their plots, by kind and id ------------

    def get_document(self, kind: str, key: str) -> bytes | None:
        """The bytes stored under (kind, key), or None (absent or evicted)."""
        member = f"{kind}:{key}"

        found = self._read_and_touch(f"a {kind} read", "doc:" + member, "doc-accessed", member)
        return None if found is None else bytes(found)

    def put_document(self, kind: str, key: str, data: bytes) -> None:
        """Store ``data`` under (kind, key), then evict the least recently used past the bound."""
        self._call(
            f"a {kind} write",
            lambda: self._put_document(
                args=[PREFIX, f"{kind}:{key}", data, time.time(), self.max_bytes]
            ),
        )


def _holder_alive(held: bytes) -> bool:
    _, _, process = held.decode(errors="replace").partition(" ")
    return processes.process_alive(process)
