"""The generic runtime alone, with no kind of question: a document computed once by two
runtimes (two processes' worth) sharing one store, under the one lease loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.compute import ComputePool
from service.runtime import Progress, Runtime
from service.store import ResultStore

MIB = 1 << 20


class WatchedStore(ResultStore):
    """The SQLite store, telling when it refused a lease (its owner's rival waits)."""

    refused: asyncio.Event
    loop: asyncio.AbstractEventLoop

    def try_lease(self, key: str, owner: str, ttl_s: float) -> bool:
        taken = super().try_lease(key, owner, ttl_s)
        if not taken:
            self.loop.call_soon_threadsafe(self.refused.set)
        return taken


@pytest.mark.anyio
async def test_two_runtimes_on_one_store_compute_a_document_once(tmp_path: Path) -> None:
    # Check that of two runtimes on one data directory asked the same document at once,
    # one computes it under its lease, telling its follower the steps, and the other
    # waits for the lease and answers the stored bytes.
    pool = ComputePool(workers=1, queue_size=4, timeout_s=60.0, warm=False)
    stores = [
        WatchedStore(tmp_path / "cache.sqlite3", max_bytes=MIB, memory_bytes=0) for _ in range(2)
    ]
    for store in stores:
        store.refused, store.loop = asyncio.Event(), asyncio.get_running_loop()
    first, second = (Runtime(store, pool, tmp_path / "tmp") for store in stores)
    started, go = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    async def compute(report: Progress) -> tuple[bytes, bytes]:
        calls.append("computed")
        report(0, 1, "drawing")
        started.set()
        await go.wait()
        return b'{"answer": 42}', b'{"answer": 42}'  # answered now, stored

    heard: list[tuple[int, int, str]] = []
    try:
        task = first.document_computation("doc", "k", compute, lambda *step: heard.append(step))
        await asyncio.wait_for(started.wait(), 30)
        assert heard == [(0, 1, "drawing")]
        # The first holds the lease: the second is refused it, and waits.
        waiting = asyncio.create_task(second.get_or_compute_document("doc", "k", compute))
        await asyncio.wait_for(stores[1].refused.wait(), 30)
        assert not waiting.done()
        go.set()
        assert await asyncio.wait_for(task, 30) == (b'{"answer": 42}', False)
        assert await asyncio.wait_for(waiting, 30) == (b'{"answer": 42}', True)
        assert calls == ["computed"]
        # The lease was released: anyone may take it now.
        assert second.results.try_lease("doc:k", second.owner, 60)
    finally:
        pool.close()
