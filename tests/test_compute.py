"""The compute pool: the event loop stays free, the bound answers 503, the timeout stops work."""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import logging
import math
import os
import pickle
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service import worker_memory
from service.compute import ComputePool
from service.errors import ComputeBusyError, ComputeFailedError, WorkerDiedError
from tests.conftest import make_settings, serve

pytestmark = pytest.mark.anyio

# About 8 s of work on digits (1000 random inits, no early stop): longer than the timeout.
LONG = {"strategies": [{"init": "random", "n_init": 1000}], "tol": 0.0, "random_state": 5}
TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
async def small_pool_client(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[httpx.AsyncClient]:
    """One worker, no queue, a short timeout."""
    settings = make_settings(
        tmp_path_factory.mktemp("small"), workers=1, queue_size=0, timeout_s=TIMEOUT_S
    )
    async with serve(settings) as client:
        # Warm the built-in digits so the long request starts computing at once.
        assert (
            await client.post("/v1/benchmarks", json={"strategies": ["pca"]})
        ).status_code == 200
        yield client


async def _wait_until_computing(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        metrics = (await client.get("/metrics")).text
        if "clusterbench_compute_pending 1.0" in metrics:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the long computation never started")


async def test_health_answers_while_computing_and_busy_is_503(
    small_pool_client: httpx.AsyncClient,
) -> None:
    # Check that /healthz answers at once while the only worker computes, that another
    # computation is refused with 503 and Retry-After, and that the long one is stopped
    # at the timeout with a 504.
    client = small_pool_client
    long_request = asyncio.create_task(client.post("/v1/benchmarks", json=LONG))
    await _wait_until_computing(client)

    for _ in range(5):
        t0 = time.perf_counter()
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert time.perf_counter() - t0 < 0.5
    busy = await client.post("/v1/benchmarks", json={"dataset": "iris"})
    assert busy.status_code == 503
    assert busy.headers["content-type"] == "application/problem+json"
    assert int(busy.headers["retry-after"]) >= 1
    assert "busy" in busy.json()["detail"]
    assert not long_request.done()

    t0 = time.perf_counter()
    response = await long_request
    assert response.status_code == 504
    assert "CLUSTERBENCH_TIMEOUT_S" in response.json()["detail"]
    assert time.perf_counter() - t0 < TIMEOUT_S + 5


async def test_pool_recovers_after_timeout(small_pool_client: httpx.AsyncClient) -> None:
    # Check that after a timed-out computation the pool computes the next request.
    client = small_pool_client
    other_long = {**LONG, "random_state": 6}
    assert (await client.post("/v1/benchmarks", json=other_long)).status_code == 504
    response = await client.post("/v1/benchmarks", json={"dataset": "wine"})
    assert response.status_code == 200
    assert (await client.get("/readyz")).status_code == 200


async def test_identical_requests_compute_once(tmp_path: Path) -> None:
    # Check that concurrent identical requests share one computation.
    async with serve(make_settings(tmp_path, workers=1, queue_size=0)) as client:
        request = {"dataset": "breast_cancer", "strategies": [{"init": "random", "n_init": 40}]}
        responses = await asyncio.gather(
            *(client.post("/v1/benchmarks", json=request) for _ in range(8))
        )
        assert [r.status_code for r in responses] == [200] * 8
        assert len({r.json()["id"] for r in responses}) == 1
        assert len({r.json()["results"][0]["fit_time"] for r in responses}) == 1
        metrics = (await client.get("/metrics")).text
        assert "clusterbench_computations_total 1.0" in metrics


async def test_dead_worker_is_a_503_and_replaced() -> None:
    # Check that a worker dying mid-task is reported as retryable and the pool goes on.
    pool = ComputePool(workers=1, queue_size=0, timeout_s=30, threads_per_worker=1)
    try:
        with pytest.raises(ComputeFailedError, match="died"):
            await pool.run(os._exit, 3)
        assert await pool.run(os.getpid) > 0
    finally:
        pool.close()


def pid_after(seconds: float) -> int:
    """A task for a worker: wait, then say which process ran it."""
    time.sleep(seconds)
    return os.getpid()


# Small objects a task left behind in its worker, allocated after its large temporaries.
_LEFT_BEHIND: list[bytearray] = []


def resident_anonymous_mib() -> int:
    """A task for a worker: its process's resident anonymous memory, MiB."""
    with Path("/proc/self/status").open() as status:
        line = next(line for line in status if line.startswith("RssAnon:"))
    return int(line.split()[1]) // 1024


def large_blocks(mib: int) -> list[Any]:
    """``mib`` MiB of 8 MB blocks made the way a block-wise pass makes them, each
    followed by a small object that stays. Once an 8 MB array was mapped and freed,
    glibc serves the next from its heap, and keeps them there once freed."""
    import numpy as np

    np.ones(1 << 20).sum()
    blocks = []
    for _ in range(mib // 8):
        blocks.append(np.ones(1 << 20))
        _LEFT_BEHIND.append(bytearray(1 << 16))
    return blocks


def free_blocks(mib: int) -> int:
    """A task for a worker: free ``mib`` MiB of :func:`large_blocks`, and say the memory
    it started with."""
    before = resident_anonymous_mib()
    large_blocks(mib)  # made, then dropped
    return before


@pytest.mark.skipif(worker_memory._malloc_trim() is None, reason="glibc's malloc_trim")
async def test_a_worker_gives_back_what_its_task_freed() -> None:
    # Check that what a task freed goes back to the system when it ends: the worker's
    # heap kept it (a benchmark of 1M x 32 float32 data left 31-49 MB in each worker,
    # counted in every peak while another worker computed).
    pool = ComputePool(workers=1, queue_size=0, timeout_s=30, threads_per_worker=1, warm=False)
    try:
        before = await pool.run(free_blocks, 96)
        assert await pool.run(resident_anonymous_mib) - before < 32
    finally:
        pool.close()


def _anonymous_mib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("RssAnon:"))
    return int(line.split()[1]) // 1024


@pytest.mark.skipif(worker_memory._malloc_trim() is None, reason="glibc's malloc_trim")
async def test_workers_give_back_what_their_results_took_once_sent() -> None:
    # Check that workers give back the memory of results they sent without waiting for
    # their next task, also when both send at once (they share one pipe: a send waits for
    # the other's): the models of a 100k x 50k sparse benchmark stayed in a worker (20-38
    # MB) while the next strategy computed. Read from outside: no task runs meanwhile.
    pool = ComputePool(workers=2, queue_size=0, timeout_s=30, threads_per_worker=1, warm=False)
    try:
        pids = set(await asyncio.gather(pool.run(pid_after, 0.5), pool.run(pid_after, 0.5)))
        before = {pid: _anonymous_mib(pid) for pid in pids}
        sent = await asyncio.gather(*(pool.run(large_blocks, 96) for _ in pids))
        assert [len(blocks) for blocks in sent] == [12] * len(pids)
        deadline = time.monotonic() + 20
        while any(_anonymous_mib(pid) - before[pid] >= 32 for pid in pids):
            assert time.monotonic() < deadline, "a result's memory was never given back"
            await asyncio.sleep(0.01)
    finally:
        pool.close()


def test_a_result_is_received_as_its_value_and_sent_once() -> None:
    # Check that the wrapper a worker returns unpickles to the value itself, lets go of
    # it, and refuses to be sent again rather than send nothing.
    result = worker_memory.LetGoOnceSent({"fit_time": 0.5})
    assert pickle.loads(pickle.dumps(result)) == {"fit_time": 0.5}
    with pytest.raises(pickle.PicklingError):
        pickle.dumps(result)


async def test_a_pool_whose_workers_all_die_is_replaced() -> None:
    # Check that when every worker is killed at once the request gets a retryable 503
    # (never a 500) and the next computation runs on a fresh set of workers.
    pool = ComputePool(workers=2, queue_size=0, timeout_s=8, threads_per_worker=1, grace_s=1)
    try:
        await pool.start()
        # The forkserver is shared with other pools of this process: find this pool's
        # own workers by asking them, both at once (each task holds its worker a while).
        pids = set(await asyncio.gather(pool.run(pid_after, 0.5), pool.run(pid_after, 0.5)))
        assert len(pids) == 2
        waiting = asyncio.ensure_future(pool.run(time.sleep, 5))
        await asyncio.sleep(0.5)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(ComputeFailedError):
            await waiting
        for _ in range(10):
            try:
                assert await pool.run(os.getpid) not in pids
                break
            except ComputeFailedError:
                await asyncio.sleep(0.5)
        else:
            raise AssertionError("the pool never recovered")
        assert pool.healthy
    finally:
        pool.close()


def _computations(metrics: str) -> float:
    (line,) = [x for x in metrics.splitlines() if x.startswith("clusterbench_computations_total")]
    return float(line.split()[-1])


async def test_a_timed_out_request_is_remembered(small_pool_client: httpx.AsyncClient) -> None:
    # Check that a request that ran past the timeout is answered 504 at once when asked
    # again, with an honest Retry-After, and does not take a worker a second time.
    client = small_pool_client
    request = {**LONG, "random_state": 7}
    first = await client.post("/v1/benchmarks", json=request)
    assert first.status_code == 504
    assert int(first.headers["retry-after"]) >= 100  # failure_ttl_s, 120 s by default
    before = _computations((await client.get("/metrics")).text)
    again = await client.post("/v1/benchmarks", json=request)
    assert again.status_code == 504
    assert again.headers["content-type"] == "application/problem+json"
    assert "not computed again" in again.json()["detail"]
    assert 1 <= int(again.headers["retry-after"]) <= 120
    assert _computations((await client.get("/metrics")).text) == before
    # Another question is computed as usual.
    assert (await client.post("/v1/benchmarks", json={"dataset": "iris"})).status_code == 200


async def test_small_work_has_its_own_lane(small_pool_client: httpx.AsyncClient) -> None:
    # Check that while the only compute worker is busy (and its queue is full), a small
    # upload and a prediction are still answered, while another benchmark is refused.
    client = small_pool_client
    models = (await client.post("/v1/benchmarks", json={"dataset": "iris"})).json()
    model_id = models["results"][0]["model_id"]
    long_request = asyncio.create_task(
        client.post("/v1/benchmarks", json={**LONG, "random_state": 8})
    )
    await _wait_until_computing(client)
    upload = await client.post(
        "/v1/datasets", content=b"a,b\n1,2\n3,4\n5,7\n", headers={"content-type": "text/csv"}
    )
    assert upload.status_code in (200, 201), upload.text
    predict = await client.post(
        f"/v1/models/{model_id}/predict", json={"X": [[5.0, 3.4, 1.5, 0.2]]}
    )
    assert predict.status_code == 200, predict.text
    busy = await client.post("/v1/benchmarks", json={"dataset": "wine", "random_state": 1})
    assert busy.status_code == 503
    assert not long_request.done()
    assert (await long_request).status_code == 504


async def test_a_burst_is_refused_before_the_store_is_touched(tmp_path: Path) -> None:
    # Check that when the pool is full, new questions are refused (503) before any lease
    # is taken or result read for them: under a burst the refusal must come at once.
    from service.datasets import DatasetStore
    from service.engine import BenchmarkEngine
    from service.schemas import BenchmarkRequest
    from service.store import ResultStore

    pool = ComputePool(workers=1, queue_size=0, timeout_s=30, threads_per_worker=1)
    results = ResultStore(tmp_path / "cache.sqlite3", max_bytes=1 << 30, memory_bytes=0)
    engine = BenchmarkEngine(DatasetStore(tmp_path / "datasets"), results, pool)
    leases = []
    take = results.try_lease
    results.try_lease = lambda *a: leases.append(a) or take(*a)  # type: ignore[method-assign]
    try:
        await pool.start()
        # Resolved first: iris's first copy is written by a worker of the (here, same) pool.
        jobs = [
            await engine.resolve(BenchmarkRequest(dataset="iris", random_state=seed))
            for seed in range(10)
        ]
        holding = asyncio.ensure_future(pool.run(time.sleep, 3))
        while pool.pending < 1:
            await asyncio.sleep(0.01)
        outcomes = await asyncio.gather(
            *(engine.get_or_compute(job) for job in jobs), return_exceptions=True
        )
        assert all(isinstance(o, ComputeBusyError) for o in outcomes), outcomes
        assert leases == []
        assert all(o.retry_after >= 1 for o in outcomes if isinstance(o, ComputeBusyError))
        await holding
    finally:
        pool.close()
        results.close()


async def test_a_broken_pool_is_a_503_and_replaced(caplog: pytest.LogCaptureFixture) -> None:
    # Check that pebble's BrokenProcessPool ("All workers expired", a RuntimeError whose
    # text does not say "pool") is a retryable 503 and that the pool is replaced.
    pool = ComputePool(workers=1, queue_size=0, timeout_s=30, threads_per_worker=1)
    try:
        await pool.start()
        broken: concurrent.futures.Future[int] = concurrent.futures.Future()
        broken.set_exception(concurrent.futures.process.BrokenProcessPool("All workers expired"))
        old = pool._pool
        old.submit = lambda *a, **k: broken  # type: ignore[method-assign]
        old.stop()
        with pytest.raises(ComputeFailedError) as failed:
            await pool.run(os.getpid)
        assert failed.value.retry_after is not None
        assert failed.value.retry_after >= 1
        assert pool._pool is not old
        assert await pool.run(os.getpid) > 0
    finally:
        pool.close()


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def test_a_killed_worker_is_logged_and_said(caplog: pytest.LogCaptureFixture) -> None:
    # Check that a worker killed by SIGKILL (what the kernel does for memory) is logged,
    # named in the problem, and answered with the time a worker takes to start again.
    pool = ComputePool(workers=1, queue_size=0, timeout_s=30, threads_per_worker=1)
    try:
        await pool.start()
        with (
            caplog.at_level(logging.ERROR, logger="service.compute"),
            pytest.raises(WorkerDiedError) as died,
        ):
            await pool.run(_kill_self)
        assert died.value.killed
        assert "SIGKILL" in died.value.detail
        assert "memory" in died.value.detail
        assert died.value.retry_after == math.ceil(pool.start_s)
        assert any("SIGKILL" in r.getMessage() for r in caplog.records)
        assert pool.worker_deaths == 1
        assert await pool.run(os.getpid) > 0
    finally:
        pool.close()


async def test_a_busy_answer_waits_for_a_whole_computation() -> None:
    # Check that Retry-After of a busy pool counts the time a computation holds its
    # place, all its tasks, not one task's: a computation of thirty 0.1 s tasks made
    # the busy answer say Retry-After: 1 for work of seconds.
    pool = ComputePool(workers=1, queue_size=0, timeout_s=30, threads_per_worker=1)

    async def computation() -> None:
        with pool.admitted():
            for _ in range(30):
                await pool.run(time.sleep, 0.1)

    try:
        await pool.start()
        await computation()  # measured: about 3 s held
        holding = asyncio.ensure_future(computation())
        while pool.pending < 1:
            await asyncio.sleep(0.01)
        with pytest.raises(ComputeBusyError) as busy:
            await pool.run(time.sleep, 0)
        assert busy.value.retry_after is not None
        assert busy.value.retry_after >= 3
        await holding
    finally:
        pool.close()


def thread_caps() -> list[int]:
    """A task for a worker: the BLAS/OpenMP thread caps it runs under."""
    from threadpoolctl import threadpool_info

    return sorted({library["num_threads"] for library in threadpool_info()})


def wait_for_file(path: str) -> None:
    """A task for a worker: hold it until ``path`` exists (at most 30 s)."""
    deadline = time.monotonic() + 30
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)


async def test_a_computation_gets_the_same_threads_however_many_run(tmp_path: Path) -> None:
    # Check that a computation's BLAS/OpenMP threads are set by configuration, never by
    # the load at the time: sums split over another number of threads differ in their
    # last bits, so the same question asked alone and beside another got answers that
    # differed (the pool gave a lone computation every CPU, two running ones half each).
    pool = ComputePool(workers=2, queue_size=0, timeout_s=30)
    release = tmp_path / "release"
    try:
        await pool.start()
        alone = await pool.run(thread_caps)
        holding = asyncio.ensure_future(pool.run(wait_for_file, str(release)))
        while pool.pending < 1:
            await asyncio.sleep(0.01)
        beside = await pool.run(thread_caps)
        release.touch()
        await holding
    finally:
        pool.close()
    assert alone == beside == [len(os.sched_getaffinity(0))]
