"""The compute pool: the event loop stays free, the bound answers 503, the timeout stops work."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service.compute import ComputePool
from service.errors import ComputeFailedError
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
    assert (await client.post("/v1/benchmarks", json=LONG)).status_code == 504
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
