"""The persistent result store: round trips, corruption, eviction, leases.

The tests taking ``backend`` run against both stores: the embedded SQLite one and Redis
(a real ``redis-server``, see tests/scaleout.py).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis

from service import result_backend
from service import sqlite as sqlite_helper
from service.errors import StoreUnavailableError
from service.jobs.records import RELEASED, JobBackend, JobRecord, JobStore, owner_alive
from service.jobs.redis_records import job_from_hash, job_to_hash
from service.memory import MemoryLRU
from service.redis_store import RedisResultStore
from service.schemas import BenchmarkResult, StabilityResult, SweepResult
from service.store import ResultStore, StoredBenchmark, model_from_bytes, model_to_bytes
from service.tenants import TenantStore
from tests.conftest import make_settings, serve
from tests.helpers import make_entry, make_model, traced_peak
from tests.scaleout import BACKENDS, Backend, RedisServer

MIB = 1024 * 1024


def make_store(tmp_path: Path, **kwargs: int) -> ResultStore:
    options = {"max_bytes": 64 * MIB, "memory_bytes": MIB, **kwargs}
    return ResultStore(tmp_path / "cache.sqlite3", **options)


def test_round_trip_and_hit_body(backend: Backend) -> None:
    # Check that a stored benchmark reads back byte for byte, from a fresh store too.
    store = backend.results()
    entry = make_entry(1)
    store.put(entry)
    again = backend.results().get(entry.id)
    assert again is not None
    assert again.body == entry.body
    assert orjson.loads(again.hit_body)["cached"] is True
    model_id = next(iter(entry.models))
    model = backend.results().get_model(model_id)
    assert model is not None
    np.testing.assert_array_equal(model.cluster_centers, entry.models[model_id].cluster_centers)
    assert store.get("f" * 64) is None


BENCHMARK_ROW = "SELECT body FROM benchmarks WHERE id = ?"
DOCUMENT_ROW = "SELECT data FROM documents WHERE kind = '{}' AND key = ?"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "model", "body", "row"),
    [
        (
            "/v1/benchmarks",
            BenchmarkResult,
            {"dataset": "iris", "strategies": ["k-means++", "random"]},
            BENCHMARK_ROW,
        ),
        ("/v1/sweeps", SweepResult, {"dataset": "iris", "k": [2, 3]}, DOCUMENT_ROW.format("sweep")),
        (
            "/v1/stability",
            StabilityResult,
            {"dataset": "iris", "seeds": 2},
            DOCUMENT_ROW.format("stability"),
        ),
    ],
    ids=["benchmark", "sweep", "stability"],
)
async def test_an_answer_is_its_models_json_stored_in_its_hit_form(
    tmp_path: Path, path: str, model: type[Any], body: dict[str, Any], row: str
) -> None:
    # Check that a computed benchmark, sweep or stability run is stored as its model's own
    # JSON with "cached": true, which a hit sends as stored, and that the first answer is
    # the same model's JSON with "cached": false: no byte of either is edited.
    data_dir = tmp_path / "data"
    async with serve(make_settings(data_dir, workers=1)) as client:
        first = await client.post(path, json=body)
        assert first.status_code == 200, first.text
        hit = await client.get(f"{path}/{first.json()['id']}")
    with closing(sqlite3.connect(data_dir / "cache.sqlite3")) as db:
        (stored,) = db.execute(row, (first.json()["id"],)).fetchone()
    answer = model.model_validate_json(stored)
    assert answer.cached is True
    assert stored == answer.model_dump_json(exclude_unset=True).encode()
    assert hit.content == stored
    first_answer = answer.model_copy(update={"cached": False})
    assert first.content == first_answer.model_dump_json(exclude_unset=True).encode()


@pytest.mark.parametrize("scaled", [True, False])
def test_model_bytes_round_trip(scaled: bool) -> None:
    # Check that a model survives .npz bytes exactly, with or without a scaler.
    model = make_model(3, scaled)
    back = model_from_bytes(model_to_bytes(model))
    assert back.init == model.init
    assert (back.n_clusters, back.n_features, back.n_iter) == (3, 4, 7)
    assert back.inertia == model.inertia
    np.testing.assert_array_equal(back.cluster_centers, model.cluster_centers)
    if scaled:
        np.testing.assert_array_equal(back.scaler_mean, model.scaler_mean)
        np.testing.assert_array_equal(back.scaler_scale, model.scaler_scale)
    else:
        assert back.scaler_mean is None


def test_a_benchmark_s_models_are_written_one_at_a_time(tmp_path: Path) -> None:
    # Check that storing a benchmark holds one model's bytes at a time: its models of
    # wide data (8 x 50,000 centres, 3 MB each here) were all serialised before the write.
    rng = np.random.default_rng(0)
    models = {
        f"{index:064x}": dataclasses.replace(
            make_model(index, scaled=False),
            n_clusters=8,
            n_features=50_000,
            cluster_centers=rng.random((8, 50_000)),
        )
        for index in range(4)
    }
    entry = StoredBenchmark.from_body("b" * 64, make_entry(0).body, models)
    largest = max(len(model_to_bytes(model)) for model in models.values())
    store = make_store(tmp_path)

    _, peak = traced_peak(lambda: store.put(entry))

    assert peak < 3 * largest  # one model's bytes and the buffer they were written in
    for model_id, model in models.items():
        stored = store.get_model(model_id)
        assert stored is not None
        np.testing.assert_array_equal(stored.cluster_centers, model.cluster_centers)


def test_pickled_model_is_refused(tmp_path: Path) -> None:
    # Check that a stored model holding a pickled object is never unpickled.
    buffer = io.BytesIO()
    np.savez(buffer, init=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        model_from_bytes(buffer.getvalue())


def test_corrupt_rows_are_misses(tmp_path: Path) -> None:
    # Check that a body, model or plot whose bytes changed on disk reads as absent.
    store = make_store(tmp_path)
    entry = make_entry(2)
    store.put(entry)
    store.put_plot(entry.id, "all", b"\x89PNG fake")
    model_id = next(iter(entry.models))
    with sqlite3.connect(tmp_path / "cache.sqlite3") as db:
        db.execute("UPDATE benchmarks SET body = ?", (b"garbage",))
        db.execute("UPDATE plots SET png = ?", (b"garbage",))
        db.execute("UPDATE models SET data = ?", (b"garbage",))
    fresh = make_store(tmp_path)
    assert fresh.get_plot(entry.id, "all") is None
    assert fresh.get_model(model_id) is None
    assert fresh.get(entry.id) is None
    assert fresh.corrupt_entries == 3
    fresh.put(entry)
    assert fresh.get(entry.id) is not None


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_database_is_set_aside(tmp_path: Path, damage: str) -> None:
    # Check that a database file filled with garbage or cut short is moved aside and an
    # empty store takes its place, at start-up and under a live store.
    store = make_store(tmp_path)
    for i in range(20):
        store.put(make_entry(i, padding=5000))
    store.close()
    path = tmp_path / "cache.sqlite3"
    data = path.read_bytes()
    path.write_bytes(b"\x00garbage" * 4096 if damage == "garbage" else data[: len(data) // 3])

    reopened = make_store(tmp_path)
    assert reopened.usable()
    assert reopened.get(make_entry(1).id) is None
    reopened.put(make_entry(99))
    assert reopened.get(make_entry(99).id) is not None
    assert list(tmp_path.glob("cache.sqlite3.corrupt-*"))

    # Now damage it under the open store: reads answer None, never raise.
    path.write_bytes(b"\xffnot a database" * 4096)
    assert reopened.get(make_entry(50).id) is None
    reopened.put(make_entry(51))
    assert reopened.usable()


def test_eviction_keeps_the_bound_and_takes_models_along(backend: Backend) -> None:
    # Check that the store stays under max_bytes, evicting least recently used entries
    # with their plots and their models.
    store = backend.results(max_bytes=60_000, memory_bytes=0)
    entries = [make_entry(i, padding=9000) for i in range(12)]
    for entry in entries:
        store.put(entry)
        store.put_plot(entry.id, "all", b"p" * 1000)
        assert store.total_bytes() <= 60_000
        store.touch(entries[0].id)  # the first stays the most recently used
    assert store.get(entries[0].id) is not None
    assert store.get(entries[1].id) is None
    assert store.get_plot(entries[1].id, "all") is None
    assert store.get_model(next(iter(entries[1].models))) is None
    assert store.get(entries[-1].id) is not None
    kept = {e.id for e in entries if store.get(e.id) is not None}
    for entry in entries:
        model_id = next(iter(entry.models))
        assert (store.get_model(model_id) is not None) == (entry.id in kept)
        assert store.users_of([model_id])[model_id] == ({entry.id} & kept)
    assert [i for i, _ in store.page(limit=100)] == [
        e.id for e in reversed(entries) if e.id in kept
    ]
    if backend.name == "sqlite":
        with sqlite3.connect(backend.root / "cache.sqlite3") as db:
            orphans = db.execute(
                "SELECT COUNT(*) FROM models"
                " WHERE id NOT IN (SELECT model_id FROM benchmark_models)"
            ).fetchone()[0]
        assert orphans == 0


def test_shared_models_outlive_one_benchmark(backend: Backend) -> None:
    # Check that a model two benchmarks share stays while one of them remains.
    store = backend.results(max_bytes=10**9, memory_bytes=0)
    shared = make_model(5)
    first = StoredBenchmark.from_body("a" * 64, orjson.dumps({"id": "a" * 64}), {"m" * 64: shared})
    second = StoredBenchmark.from_body("b" * 64, orjson.dumps({"id": "b" * 64}), {"m" * 64: shared})
    store.put(first)
    store.put(second)
    assert store.users_of(["m" * 64]) == {"m" * 64: {first.id, second.id}}
    assert store.delete(first.id)
    assert not store.delete(first.id)
    assert store.get_model("m" * 64) is not None
    assert store.delete(second.id)
    assert store.get_model("m" * 64) is None
    assert store.total_bytes() == 0


def test_leases(backend: Backend) -> None:
    # Check that one owner holds a lease at a time, across store instances, until it is
    # released or expires.
    one, two = backend.results(), backend.results()
    assert one.try_lease("job", "one", ttl_s=60)
    assert not two.try_lease("job", "two", ttl_s=60)
    one.release("job", "one")
    assert two.try_lease("job", "two", ttl_s=-1)  # already expired
    assert one.try_lease("job", "one", ttl_s=60)


def test_unopenable_path_is_not_ready(tmp_path: Path) -> None:
    # Check that a store whose file cannot be opened reports itself unusable, and that
    # nothing at that path is moved.
    blocker = tmp_path / "cache.sqlite3"
    blocker.mkdir()
    store = make_store(tmp_path)
    assert not store.usable()
    assert store.get("a" * 64) is None
    store.put(make_entry(1))
    assert blocker.is_dir()


def test_a_plot_stored_twice_is_counted_once(backend: Backend) -> None:
    # Check that two processes storing the same plot do not inflate the entry's size.
    store = backend.results()
    entry = make_entry(7)
    store.put(entry)
    before = store.total_bytes()
    store.put_plot(entry.id, "all", b"p" * 500)
    store.put_plot(entry.id, "all", b"p" * 500)
    assert store.total_bytes() == before + 500
    assert backend.results().get_plot(entry.id, "all") == b"p" * 500
    assert store.get_plot(entry.id, "other") is None
    store.put_plot("9" * 64, "all", b"p")  # no such benchmark: not stored
    assert backend.results().get_plot("9" * 64, "all") is None


def test_leases_renew_and_a_dead_owner_s_lease_expires(backend: Backend) -> None:
    # Check that a lease is renewed and released only by its owner, and that a lease
    # nobody renews is free again within its time to live.
    one, two = backend.results(), backend.results()
    assert one.try_lease("q", "one", ttl_s=60)
    assert not two.renew_lease("q", "two", ttl_s=60)
    two.release("q", "two")  # not its lease: nothing happens
    assert not two.try_lease("q", "two", ttl_s=60)
    assert one.renew_lease("q", "one", ttl_s=0.3)
    deadline = time.monotonic() + 10
    while not two.try_lease("q", "two", ttl_s=60):
        assert time.monotonic() < deadline, "a lease nobody renewed did not expire"
        time.sleep(0.05)
    assert not one.renew_lease("q", "one", ttl_s=60)


def test_pages_are_newest_first_with_a_cursor(backend: Backend) -> None:
    # Check that listing returns every benchmark once, newest first, page by page, and
    # only those asked for with ``among``.
    store = backend.results()
    entries = [make_entry(i) for i in range(7)]
    for entry in entries:
        store.put(entry)
    seen: list[str] = []
    before = None
    while True:
        page = store.page(limit=3, before=before)
        if not page:
            break
        seen += [i for i, _ in page]
        last_id, last_created = page[-1]
        before = (last_created, last_id)
    assert seen == [e.id for e in reversed(entries)]
    among = [entries[1].id, entries[4].id, "f" * 64]
    assert [i for i, _ in store.page(limit=10, among=among)] == [entries[4].id, entries[1].id]
    first = store.page(limit=1, among=among)
    assert store.page(limit=10, among=among, before=(first[0][1], first[0][0])) == [
        (entries[1].id, store.page(limit=10, among=[entries[1].id])[0][1])
    ]


def test_documents_round_trip_and_stay_bounded(backend: Backend) -> None:
    # Check that sweeps and stability runs read back from another store instance, and
    # that the least recently used go first past the bound.
    store = backend.results(max_bytes=25_000, memory_bytes=0)
    store.put_document("sweep", "a", b"a" * 10_000)
    store.put_document("sweep", "b", b"b" * 10_000)
    assert backend.results().get_document("sweep", "a") == b"a" * 10_000  # a is used now
    store.put_document("stability", "c", b"c" * 10_000)
    other = backend.results(max_bytes=25_000, memory_bytes=0)
    assert other.get_document("sweep", "b") is None
    assert other.get_document("sweep", "a") == b"a" * 10_000
    assert other.get_document("stability", "c") == b"c" * 10_000
    assert other.get_document("stability", "a") is None


# Replicas share only the Redis store: the embedded store's memory layer is per process.
@pytest.mark.parametrize("backend", BACKENDS[1:], indirect=True)
def test_a_benchmark_deleted_by_another_replica_is_not_served(backend: Backend) -> None:
    # Check that once another replica deleted a benchmark, a store that served it from
    # its memory layer before no longer does (the delete's invalidation reaches it).
    mine, theirs = backend.results(), backend.results()
    entry = make_entry(3)
    mine.put(entry)
    mine.put_plot(entry.id, "all", b"png")
    deadline = time.monotonic() + 10
    while mine.get(entry.id) is not None and mine.peek(entry.id) is None:
        # Kept in memory (a hot hit) once the store listens for invalidations.
        assert time.monotonic() < deadline, "the memory layer was never used"
        time.sleep(0.01)
    assert mine.get_plot(entry.id, "all") == b"png"
    assert theirs.delete(entry.id)
    while mine.peek(entry.id) is not None:
        assert time.monotonic() < deadline, "a deleted benchmark is still served from memory"
        time.sleep(0.001)
    assert mine.get(entry.id) is None
    assert mine.get_plot(entry.id, "all") is None
    assert mine.get_model(next(iter(entry.models))) is None


def test_the_memory_layer_keeps_a_stored_answer_without_its_models(backend: Backend) -> None:
    # Check that a just-computed benchmark kept in memory holds its answer, not its
    # models: the layer's bound counted the answer's bytes alone, while the models of a
    # 100k x 50k sparse benchmark (22 MB) stayed with it in the API process.
    store = backend.results()
    ready = make_entry(4)
    store.put(ready)
    deadline = time.monotonic() + 10
    while store.get(ready.id) is not None and store.peek(ready.id) is None:
        # Redis keeps values in memory once it listens for invalidations.
        assert time.monotonic() < deadline, "the memory layer was never used"
        time.sleep(0.01)
    entry = make_entry(5, models=2)

    store.put(entry)

    hot = store.peek(entry.id)
    assert hot is not None
    assert hot.body == entry.body
    assert hot.models == {}
    for model_id, model in entry.models.items():
        stored = store.get_model(model_id)
        assert stored is not None
        np.testing.assert_array_equal(stored.cluster_centers, model.cluster_centers)


@pytest.mark.server
def test_redis_away_is_a_503_and_back_by_itself(tmp_path: Path) -> None:
    # Check that every call to a Redis that is stopped fails within its timeout as
    # StoreUnavailableError (503, Retry-After), readiness says why, and the same store
    # works again once Redis is back on its port.
    with RedisServer(tmp_path / "redis") as server:
        store = RedisResultStore(server.url, max_bytes=MIB, timeout_s=1)
        entry = make_entry(5)
        store.put(entry)
        server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as caught:
            store.get(entry.id)
        assert caught.value.status == 503
        assert caught.value.headers()["Retry-After"]
        with pytest.raises(StoreUnavailableError):
            store.try_lease("q", "me", 10)
        problem = store.storage_problem()
        assert problem is not None
        assert "Redis" in problem
        assert time.monotonic() - started < 10
        server.start()
        assert store.storage_problem() is None
        found = store.get(entry.id)  # appendonly: kept across the restart
        assert found is not None
        assert found.body == entry.body
        store.close()


# -- job records -------------------------------------------------------------------------


def new_job(store: JobBackend, key: str, owner: str = "1-me@here") -> tuple[JobRecord, bool]:
    return store.create_or_join(
        kind="benchmark",
        key=key,
        request={"dataset": "d", "params": {"n_clusters": 3}},
        total=2,
        owner=owner,
        alive=lambda job: not job.owner.startswith("dead"),
    )


def test_jobs_join_one_per_question_and_orphans_are_failed(backend: Backend) -> None:
    # Check that the same question joins the active job of a live owner, and that an
    # active job whose owner is gone is failed and replaced by a new one.
    one, two = backend.jobs(), backend.jobs()
    first, created = new_job(one, "k" * 64)
    assert created
    joined, created = new_job(two, "k" * 64)
    assert not created
    assert joined.id == first.id
    assert joined == first
    dead, _ = new_job(one, "d" * 64, owner="dead-1@there")
    again, created = new_job(two, "d" * 64)
    assert created
    assert again.id != dead.id
    failed = one.get(dead.id)
    assert failed is not None
    assert failed.state == "failed"
    assert failed.error is not None
    assert failed.error["type"].endswith("job-orphaned")
    assert one.get("0" * 64) is None


def test_a_job_record_round_trips_every_field(backend: Backend) -> None:
    # Check that every field of a job is written by save and read back by another store.
    one = backend.jobs()
    job, _ = new_job(one, "r" * 64)
    job.state, job.done, job.stage, job.started = "running", 1, "random", 1234.5
    assert one.save(job)
    back = backend.jobs().get(job.id)
    assert back is not None
    for name in (f.name for f in dataclasses.fields(JobRecord) if f.name != "heartbeat"):
        assert getattr(back, name) == getattr(job, name), name
    assert back.heartbeat >= job.created  # written by the store at each save


def test_a_finished_record_is_not_overwritten(backend: Backend) -> None:
    # Check that a record cancelled by another process stays cancelled: the runner's
    # later save is refused, and its heartbeat reports the state.
    runner, other = backend.jobs(), backend.jobs()
    job, _ = new_job(runner, "c" * 64)
    cancelled = other.get(job.id)
    assert cancelled is not None
    cancelled.state = "cancelled"
    assert other.save(cancelled)
    job.state, job.done = "running", 1
    assert not runner.save(job)
    assert runner.beat(job.id, job.owner) == "cancelled"
    assert runner.beat("0" * 64, job.owner) is None
    assert runner.orphans(lambda _: False) == []


def test_a_lost_job_record_is_written_again_whole(backend: Backend) -> None:
    # Check that a runner's save of a job whose record is gone (Redis restarted without
    # its append-only file) writes it again with its index entries: it is read, listed
    # and joined as before, and a later job comes after it (it was refused: the job was
    # taken as cancelled and its result discarded).
    store = backend.jobs()
    job, _ = new_job(store, "l" * 64)
    job.state, job.done, job.stage, job.started = "running", 1, "random", 1234.5
    assert store.save(job)
    if backend.redis_url is not None:
        with closing(redis.Redis.from_url(backend.redis_url)) as client:
            client.flushdb()
    else:
        with closing(sqlite3.connect(backend.root / "jobs.sqlite3")) as db, db:
            db.execute("DELETE FROM jobs")
    assert store.get(job.id) is None
    assert store.save(job)
    back = backend.jobs().get(job.id)
    assert back is not None
    for name in (f.name for f in dataclasses.fields(JobRecord) if f.name != "heartbeat"):
        assert getattr(back, name) == getattr(job, name), name
    assert [j.id for j in store.page(state="running", limit=10, before=None)] == [job.id]
    joined, created = new_job(backend.jobs(), "l" * 64)
    assert (joined.id, created) == (job.id, False)
    later, _ = new_job(store, "m" * 64)
    assert later.seq > job.seq
    job.state = "succeeded"
    assert store.save(job)
    assert store.orphans(lambda _: False) == [later]


def test_orphans_are_claimed_once(backend: Backend) -> None:
    # Check that the active jobs of a gone owner are listed oldest first, and that only
    # one process takes each over.
    store = backend.jobs()
    gone = [new_job(store, f"{i:064x}", owner="dead-2@there")[0] for i in range(3)]
    new_job(store, "e" * 64)  # a live owner's
    orphans = store.orphans(lambda job: not job.owner.startswith("dead"))
    assert [j.id for j in orphans] == [j.id for j in gone]
    assert store.claim(gone[0].id, "dead-2@there", "new-1@here")
    assert not backend.jobs().claim(gone[0].id, "dead-2@there", "new-2@here")
    claimed = store.get(gone[0].id)
    assert claimed is not None
    assert claimed.owner == "new-1@here"


def test_a_released_job_is_taken_over_at_once_from_another_host(backend: Backend) -> None:
    # Check that a job its stopping owner releases is queued again, no longer owned, and
    # an orphan at once to a process on another host (which, for a job merely left behind,
    # waits for its heartbeat to be STALE_S old); only its owner releases it, and a
    # finished job stays finished.
    store, elsewhere = backend.jobs(), backend.jobs()
    job, _ = new_job(store, "h" * 64, owner="1-me@here")
    job.state, job.done, job.stage = "running", 1, "random"
    assert store.save(job)
    other = "2-you@there"
    left = store.get(job.id)
    assert left is not None
    assert owner_alive(left, other)  # a fresh heartbeat: alive for STALE_S
    assert not store.release(job.id, other)
    assert store.release(job.id, "1-me@here")
    released = elsewhere.get(job.id)
    assert released is not None
    assert (released.state, released.stage, released.done) == ("queued", RELEASED, 1)
    assert not owner_alive(released, other)
    alive = functools.partial(owner_alive, me=other)
    assert [j.id for j in elsewhere.orphans(alive)] == [job.id]
    assert elsewhere.claim(job.id, released.owner, other)
    assert not store.release(job.id, "1-me@here")  # taken over since
    finished, _ = new_job(store, "i" * 64, owner="1-me@here")
    finished.state = "succeeded"
    assert store.save(finished)
    assert not store.release(finished.id, "1-me@here")
    again = store.get(finished.id)
    assert again is not None
    assert again.state == "succeeded"


def test_job_pages_newest_first_with_a_cursor(backend: Backend) -> None:
    # Check that jobs are listed newest first, page by page by sequence number, by state,
    # and only those asked for with ``among``.
    store = backend.jobs()
    jobs = [new_job(store, f"{i:064x}")[0] for i in range(5)]
    jobs[1].state = "succeeded"
    store.save(jobs[1])
    seen: list[str] = []
    before = None
    while page := store.page(state=None, limit=2, before=before):
        seen += [j.id for j in page]
        before = page[-1].seq
    assert seen == [j.id for j in reversed(jobs)]
    assert [j.id for j in store.page(state="succeeded", limit=10, before=None)] == [jobs[1].id]
    queued = store.page(state="queued", limit=2, before=None)
    assert [j.id for j in queued] == [jobs[4].id, jobs[3].id]
    among = [jobs[0].id, jobs[2].id, "f" * 64]
    assert [j.id for j in store.page(state=None, limit=10, before=None, among=among)] == [
        jobs[2].id,
        jobs[0].id,
    ]
    assert [j.id for j in store.page(state=None, limit=10, before=jobs[2].seq, among=among)] == [
        jobs[0].id
    ]


def test_a_job_page_refuses_a_query_it_does_not_know(backend: Backend) -> None:
    # Check that a misspelt or missing term of a job listing is a TypeError at the call:
    # ``among`` is a tenant's filter, and a typo must not list every tenant's jobs.
    store = backend.jobs()
    new_job(store, "a" * 64)
    with pytest.raises(TypeError, match="amnog"):
        store.page(state=None, limit=10, before=None, amnog=["b" * 64])  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="before"):
        store.page(state=None, limit=10)  # type: ignore[call-arg]


def test_finished_jobs_past_their_retention_are_pruned(backend: Backend) -> None:
    # Check that only jobs that finished before the cut are removed (in batches, with
    # their listing entries), that active and recent ones stay, and that a question whose
    # job was pruned gets a new job.
    store = backend.jobs()
    old = [new_job(store, f"{i:064x}")[0] for i in range(3)]
    for job, state in zip(old, ("succeeded", "failed", "cancelled"), strict=True):
        job.state, job.finished = state, 1000.0
        assert store.save(job)
    recent, _ = new_job(store, "b" * 64)
    recent.state, recent.finished = "succeeded", 5000.0
    assert store.save(recent)
    active, _ = new_job(store, "a" * 64)
    first = store.prune(before=2000.0, limit=2)
    assert len(first) == 2
    rest = store.prune(before=2000.0, limit=2)
    assert sorted(first + rest) == sorted(j.id for j in old)
    assert store.prune(before=2000.0) == []
    for job in old:
        assert backend.jobs().get(job.id) is None
    listed = [j.id for j in store.page(state=None, limit=10, before=None)]
    assert listed == [active.id, recent.id]
    again, created = new_job(store, f"{0:064x}")
    assert created
    assert again.id != old[0].id


def test_a_job_hash_carries_every_field_and_ignores_unknown_ones() -> None:
    # Check that Redis's record of a job holds every dataclass field (a field added later
    # flows through) and that a field written by a newer version is ignored when read.
    job = JobRecord(
        id="a" * 64,
        kind="sweep",
        key="b" * 64,
        request={"k": [2, 3]},
        state="running",
        done=1,
        total=2,
        stage="k=2",
        created=1.5,
        owner="1-x@h",
        error={"type": "t"},
    )
    stored = job_to_hash(job)
    assert set(stored) == {f.name for f in dataclasses.fields(JobRecord)}
    newer = {k.encode(): v for k, v in stored.items()} | {b"priority": b"3"}
    assert job_from_hash(newer) == job


def _members(role: type) -> set[str]:
    """The attributes and methods a role Protocol declares (its own and its bases')."""
    names: set[str] = set()
    for cls in role.__mro__:
        if cls is object or cls.__module__ != result_backend.__name__:
            continue
        names |= {n for n in vars(cls) if not n.startswith("_")} | set(
            getattr(cls, "__annotations__", {})
        )
    return names


ROLES = (
    result_backend.ResultCache,
    result_backend.BlobStore,
    result_backend.DocumentStore,
    result_backend.Leases,
    result_backend.StorageHealth,
)


def test_the_result_backend_is_small_roles_and_both_backends_serve_each(backend: Backend) -> None:
    # Check that the store interface is the union of small roles (each exercised on both
    # backends by the tests above), and that both backends have each role's every
    # attribute and method, with the role's parameters.
    roles = {role.__name__: _members(role) for role in ROLES}
    assert all(len(names) <= 11 for names in roles.values()), roles
    assert _members(result_backend.ResultBackend) == set().union(*roles.values()) | {"close"}
    store = backend.results()
    for role in ROLES:
        for name in _members(role):
            assert hasattr(store, name), f"{backend.name} has no {role.__name__}.{name}"
            declared = getattr(role, name, None)
            if callable(declared):
                wanted = list(inspect.signature(declared).parameters.values())[1:]
                got = list(inspect.signature(getattr(store, name)).parameters.values())
                assert [(p.name, p.kind) for p in got] == [(p.name, p.kind) for p in wanted], (
                    f"{backend.name}: {role.__name__}.{name}"
                )


def test_one_memory_lru_bounded_by_bytes_least_recently_used_first() -> None:
    # Check the in-process layer both backends keep: bounded by bytes, the least recently
    # used dropped first, a value above the bound never kept, a benchmark dropped whole.
    memory = MemoryLRU(100)
    memory.put(("benchmark", "a"), "A", 40)
    memory.put(("plot:all", "a"), "PA", 30)
    memory.put(("benchmark", "b"), "B", 30)
    assert memory.get(("benchmark", "a")) == "A"  # now the most recently used
    memory.put(("benchmark", "c"), "C", 20)  # 120 bytes: the plot of a goes
    assert memory.get(("plot:all", "a")) is None
    assert [memory.get(("benchmark", k)) for k in "abc"] == ["A", "B", "C"]
    memory.put(("benchmark", "huge"), "H", 101)
    assert memory.get(("benchmark", "huge")) is None
    memory.put(("plot:all", "b"), "PB", 10)
    memory.drop("b")
    assert memory.get(("benchmark", "b")) is None
    assert memory.get(("plot:all", "b")) is None
    memory.discard(("benchmark", "c"))
    assert memory.get(("benchmark", "c")) is None
    assert memory.get(("benchmark", "a")) == "A"
    memory.put(("benchmark", "d"), "D", 60)  # 40 + 60: fits exactly once b and c are gone
    assert memory.get(("benchmark", "a")) == "A"
    assert memory.get(("benchmark", "d")) == "D"


def test_the_three_sqlite_databases_are_opened_and_written_one_way(tmp_path: Path) -> None:
    # Check that the result cache, the jobs and the keys databases are opened by the one
    # helper (WAL, synchronous=NORMAL, a busy timeout) and that no other module of the
    # service opens a database or a write transaction its own way.
    results = ResultStore(tmp_path / "cache.sqlite3", max_bytes=MIB, memory_bytes=0)
    jobs = JobStore(tmp_path / "jobs.sqlite3")
    tenants = TenantStore(tmp_path / "keys.sqlite3")
    try:
        for db, busy_ms in (
            (results._connection(), 30_000),
            (jobs._connection(), 30_000),
            (tenants._connection(), 5_000),
        ):
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
            assert db.execute("PRAGMA busy_timeout").fetchone()[0] == busy_ms
    finally:
        for store in (results, jobs, tenants):
            store.close()
    service = Path(sqlite_helper.__file__).parent
    own_way = [
        f"{path.relative_to(service)}: {needle}"
        for path in sorted(service.rglob("*.py"))
        if path != Path(sqlite_helper.__file__)
        for needle in ("PRAGMA journal_mode", "PRAGMA synchronous", "BEGIN IMMEDIATE")
        if needle in path.read_text()
    ]
    assert own_way == []
