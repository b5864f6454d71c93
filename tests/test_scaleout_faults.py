"""Scale-out faults: store outages, take-overs and races between replicas, each once a defect."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from service.datasets import DatasetStore
from service.engine import BenchmarkEngine
from service.errors import StoreUnavailableError
from service.jobs import manager as manager_module
from service.jobs import runner as runner_module
from service.jobs.manager import JobManager
from service.jobs.records import JobBackend, JobRecord, JobStore
from service.jobs.redis_records import RedisJobStore
from service.process import free_port
from service.questions import resolve_sweep
from service.redis_store import RedisResultStore
from service.runtime import document_flight
from service.schemas import ACTIVE_STATES, SweepRequest
from service.settings import MIB, Settings
from service.store import ResultStore
from tests.conftest import make_settings, serve
from tests.helpers import make_entry
from tests.scaleout import BACKENDS, RedisServer

# Replicas, stores and their faults: real servers (Redis, uvicorn) throughout.
pytestmark = pytest.mark.server


class _FlakyLeases:
    """A store whose lease renewal fails once (Redis restarting), then works."""

    lease_renew_s = 0.01
    lease_ttl_s = 10.0

    def __init__(self) -> None:
        self.renewals = 0

    def renew_lease(self, key: str, owner: str, ttl_s: float) -> bool:
        self.renewals += 1
        if self.renewals == 1:
            raise StoreUnavailableError("the shared store did not answer")
        return True


def test_lease_renewal_survives_a_store_outage() -> None:
    """A renewal that fails while Redis is away must not end the renewing: else the lease
    expires mid-computation and another replica computes the same question too."""
    store = _FlakyLeases()
    engine: Any = SimpleNamespace(results=store, _owner="me")

    async def main() -> None:
        renewing = asyncio.create_task(BenchmarkEngine._renew_lease(engine, "question"))
        deadline = time.monotonic() + 5
        while store.renewals < 3 and time.monotonic() < deadline and not renewing.done():
            await asyncio.sleep(0.01)
        assert not renewing.done(), "the renewing task ended after one failed renewal"
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
        assert store.renewals >= 3

    asyncio.run(main())


def test_a_job_taken_over_meanwhile_is_joined_not_failed(redis_server: RedisServer) -> None:
    """Replica B joins a question whose job's owner is gone while replica C takes that job
    over (``recover``): B must see C's claim and join the job C now runs, not mark it
    failed ("orphaned") under C and start a second one."""
    redis_server.flush()
    b, c = RedisJobStore(redis_server.url), RedisJobStore(redis_server.url)
    try:
        job, created = b.create_or_join(
            kind="benchmark", key="q", request={}, total=1, owner="dead", alive=lambda j: False
        )
        assert created

        def alive(found: JobRecord) -> bool:
            if found.owner == "dead":
                # C's sweep claims it between B's read and B's write.
                assert c.claim(found.id, "dead", "C")
                return False
            return found.owner == "C"

        joined, created = b.create_or_join(
            kind="benchmark", key="q", request={}, total=1, owner="B", alive=alive
        )
        record = c.get(job.id)
        assert record is not None
        assert record.state in ACTIVE_STATES, record.error
        assert (joined.id, created) == (job.id, False)
    finally:
        b.close()
        c.close()


class _AwayOnce:
    """A job store that answers, is away once (Redis restarting), then says the job ended."""

    def __init__(self, job: JobRecord) -> None:
        self.job = job
        self.reads = 0

    def get(self, job_id: str) -> JobRecord | None:
        self.reads += 1
        if self.reads == 2:
            raise StoreUnavailableError("the shared store did not answer")
        if self.reads >= 3:
            self.job.state, self.job.finished = "succeeded", time.time()
        return copy.copy(self.job)


def test_events_of_another_replicas_job_outlast_a_store_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client following the events of a job another replica runs keeps its stream
    through a Redis restart (the headers are sent: a 503 cannot be answered any more),
    and gets the job's end once the store is back."""
    monkeypatch.setattr(manager_module, "WATCH_POLL_S", 0.01)
    job = JobRecord(
        id="j" * 64,
        kind="benchmark",
        key="q",
        request={},
        state="running",
        done=0,
        total=1,
        stage="k-means++",
        created=time.time(),
        owner="1-abc@another-host",
        heartbeat=time.time(),
    )
    manager = JobManager(_AwayOnce(job), SimpleNamespace(owner="2-def"), max_active=1)  # type: ignore[arg-type]

    async def main() -> list[str]:
        return [seen.state async for seen in manager.watch(job.id)]

    assert asyncio.run(asyncio.wait_for(main(), 10)) == ["running", "succeeded"]


@pytest.mark.parametrize("url", ["localhost:6379", "redis://redis:port/0"])
def test_a_redis_url_redis_cannot_use_is_a_settings_error(url: str) -> None:
    """Like CLUSTERBENCH_DASK_SCHEDULER: refused with the other settings (``python -m
    service`` says which variable, exit 2), not a traceback when the app starts."""
    with pytest.raises(ValidationError, match="redis_url"):
        Settings(redis_url=url)
    assert Settings(redis_url=" ").redis_url is None


@pytest.fixture(params=BACKENDS)
def job_records(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobBackend]:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        store: JobBackend = RedisJobStore(server.url)
    else:
        store = JobStore(tmp_path / "jobs.sqlite3")
    yield store
    store.close()


def test_a_runner_whose_job_was_taken_over_stops_and_leaves_it(
    job_records: JobBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica A's heartbeat went stale (Redis away past STALE_S) and replica B took its
    job over: A's progress writes must not take the record back, and A must stop running
    it, else both compute the job to the end."""
    monkeypatch.setattr(runner_module, "RECORD_POLL_S", 0.01)
    manager = JobManager(job_records, SimpleNamespace(owner="1-a"), max_active=1)  # type: ignore[arg-type]
    job, _ = job_records.create_or_join(
        kind="benchmark", key="q", request={}, total=2, owner=manager.owner, alive=lambda j: True
    )

    async def main() -> None:
        running = runner_module.Running(job=job, question=None)
        running.task = asyncio.create_task(asyncio.sleep(3600))
        follower = asyncio.create_task(manager.runner.follow_record(running))
        assert await asyncio.to_thread(job_records.claim, job.id, manager.owner, "2-b@other")
        job.state, job.done = "running", 1
        await asyncio.to_thread(job_records.save, copy.copy(job))  # A, not yet aware
        deadline = time.monotonic() + 5
        while not running.task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        stopped = running.task.cancelled()
        follower.cancel()
        running.task.cancel()
        await asyncio.gather(follower, running.task, return_exceptions=True)
        assert stopped, "replica A still runs a job replica B took over"

    asyncio.run(main())
    record = job_records.get(job.id)
    assert record is not None
    assert (record.owner, record.state) == ("2-b@other", "running")


def test_a_sweep_another_process_computes_is_waited_for_within_the_limit(
    tmp_path: Path,
) -> None:
    """As for a benchmark: a synchronous sweep whose question another process holds the
    lease on waits at most CLUSTERBENCH_TIMEOUT_S, then 503 compute-in-progress (it waited
    for as long as the lease was renewed, holding its place in the compute queue)."""
    data = tmp_path / "data"
    body = {"dataset": "iris", "k": [2, 3]}

    async def main() -> httpx.Response:
        async with serve(make_settings(data, workers=1, timeout_s=1)) as client:
            # The sweep's id as the route resolves it, without computing it.
            iris = DatasetStore(data / "datasets").builtin("iris")
            sweep_id = resolve_sweep(SweepRequest.model_validate(body), iris).id
            other = ResultStore(data / "cache.sqlite3", max_bytes=MIB, memory_bytes=0)
            try:
                assert other.try_lease(document_flight("sweep", sweep_id), "9-other", 3600)
                return await asyncio.wait_for(client.post("/v1/sweeps", json=body), 20)
            finally:
                other.close()

    response = asyncio.run(main())
    assert response.status_code == 503, response.text
    assert response.json()["type"].endswith("compute-in-progress")
    assert "Retry-After" in response.headers


def test_a_replica_forgets_the_access_times_of_what_any_replica_deleted(
    redis_server: RedisServer,
) -> None:
    """The Redis store notes when it last wrote each benchmark's LRU position; an entry
    deleted or evicted (by this replica or another) must leave that map, or it grows by
    one entry per benchmark ever served for the life of the process."""
    redis_server.flush()
    a = RedisResultStore(redis_server.url, max_bytes=64 * MIB, memory_bytes=MIB)
    b = RedisResultStore(redis_server.url, max_bytes=64 * MIB, memory_bytes=MIB)
    try:
        for store in (a, b):
            deadline = time.monotonic() + 10
            while not store._live.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
        entries = [make_entry(i) for i in range(3)]
        for entry in entries:
            a.put(entry)
            assert a.get(entry.id) is not None
        a.delete(entries[0].id)  # by this replica
        b.delete(entries[1].id)  # by another
        deadline = time.monotonic() + 5
        while len(a._access_written) > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert set(a._access_written) == {entries[2].id}
    finally:
        a.close()
        b.close()


def test_an_lru_touch_is_best_effort_on_redis_as_on_sqlite(tmp_path: Path) -> None:
    """A hit served from memory records its use off the event loop, in a future nobody
    awaits: the Redis store's touch must not raise when Redis is away or full (the
    SQLite store's does not), or each such hit logs "Future exception was never
    retrieved" with a traceback."""
    store = RedisResultStore(
        f"redis://127.0.0.1:{free_port()}/0", max_bytes=MIB, memory_bytes=0, timeout_s=0.2
    )
    try:
        store.touch("0" * 64)  # nothing listens there
    finally:
        store.close()
