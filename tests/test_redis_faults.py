"""Redis misbehaving under two tenants' replicas: full (maxmemory), frozen (SIGSTOP), and
restarted without its append-only file. Real ``redis-server``, real uvicorn replicas.

Replica A counts a rate limit in Redis; B does not, so that B shows the store's own
behaviour. Neither keeps hot answers in memory: every read goes to Redis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.helpers import ASYNC, FINISHED, KEY_A, KEY_B
from tests.scaleout import Cluster, RedisServer, metric, poll, replica, require_redis

pytestmark = pytest.mark.server

ALICE = {"Authorization": f"Bearer {KEY_A}"}
BOB = {"Authorization": f"Bearer {KEY_B}"}
# CLUSTERBENCH_REDIS_TIMEOUT_S of the replicas (the documented default).
TIMEOUT_S = 2.0
# Computes for several seconds: long enough for Redis to misbehave in the middle.
SLOW = {"strategies": [{"init": "random", "n_init": 600}], "tol": 0.0}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_redis()
    root = tmp_path_factory.mktemp("redis-faults")
    data = root / "data"
    data.mkdir()
    common = {
        "CLUSTERBENCH_API_KEYS": f"alice:{KEY_A},bob:{KEY_B}",
        "CLUSTERBENCH_REDIS_TIMEOUT_S": str(TIMEOUT_S),
        "CLUSTERBENCH_MEMORY_CACHE_BYTES": "0",
    }
    with (
        RedisServer(root / "redis", persist=False) as server,
        replica(data, server, CLUSTERBENCH_RATE_LIMIT="1000/minute", **common) as a,
        replica(data, server, **common) as b,
    ):
        yield Cluster(server, a, b)


def redis_of(cluster: Cluster) -> redis.Redis:
    return redis.Redis.from_url(cluster.redis.url)


def problem(answer: httpx.Response, status: int, slug: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == f"urn:clusterbench:problem:{slug}"
    assert int(answer.headers["retry-after"]) > 0


def test_a_full_redis_refuses_writes_with_507_and_still_answers_reads(cluster: Cluster) -> None:
    # Check that with Redis at its maxmemory (noeviction) every write is a 507 naming it,
    # while reads of what is stored (benchmarks, plots, sweeps, jobs) still answer 200 on
    # both replicas, the rate limit still counting, and writes work again once it has room.
    a, b = cluster.a, cluster.b
    body = {"dataset": "iris", "random_state": 31}
    made = httpx.post(f"{a.url}/v1/benchmarks", json=body, headers=ALICE, timeout=60)
    assert made.status_code == 200, made.text
    plot_url = made.json()["plot_url"]
    assert httpx.get(f"{a.url}{plot_url}", headers=ALICE, timeout=60).status_code == 200
    sweep = httpx.post(
        f"{a.url}/v1/sweeps", json={"dataset": "iris", "k": [2, 3]}, headers=ALICE, timeout=60
    )
    assert sweep.status_code == 200, sweep.text
    started = httpx.post(
        f"{b.url}/v1/benchmarks", json={"dataset": "wine"}, headers={**BOB, **ASYNC}, timeout=60
    )
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    assert poll(b.url, job_id, FINISHED, 60, headers=BOB)["state"] == "succeeded"

    client = redis_of(cluster)
    limit = client.config_get("maxmemory")["maxmemory"]
    client.config_set("maxmemory", 1)  # far below what it holds: full
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("clusterbench:test", 1)
        remaining = []
        for server in (a, b):
            for url in (f"/v1/benchmarks/{made.json()['id']}", plot_url):
                answer = httpx.get(f"{server.url}{url}", headers=ALICE, timeout=30)
                assert answer.status_code == 200, (server.url, url, answer.text)
                remaining.append(answer.headers.get("ratelimit-remaining"))
            again = httpx.post(f"{server.url}/v1/benchmarks", json=body, headers=ALICE, timeout=30)
            assert again.status_code == 200, again.text
            assert again.headers["x-cache"] == "hit"
            read = httpx.get(f"{server.url}/v1/sweeps/{sweep.json()['id']}", headers=ALICE)
            assert read.status_code == 200, read.text
            job = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=BOB)
            assert job.status_code == 200, job.text
            assert job.json()["state"] == "succeeded"
            listing = httpx.get(f"{server.url}/v1/jobs", headers=BOB)
            assert job_id in [j["id"] for j in listing.json()["jobs"]], listing.text
        ready = httpx.get(f"{b.url}/readyz", timeout=30)  # as for a full disk
        assert ready.status_code == 503, ready.text
        assert "full" in ready.json()["detail"]
        # A still counts alice's requests (in its own memory while Redis refuses writes).
        counted = [int(r) for r in remaining if r is not None]
        assert len(counted) == 2, remaining
        assert counted[1] < counted[0], remaining

        for server in (a, b):
            new = {"dataset": "wine", "random_state": 32}
            problem(
                httpx.post(f"{server.url}/v1/benchmarks", json=new, headers=BOB, timeout=60),
                507,
                "storage-full",
            )
            job = httpx.post(
                f"{server.url}/v1/benchmarks", json=new, headers={**BOB, **ASYNC}, timeout=60
            )
            problem(job, 507, "storage-full")
            assert "maxmemory" in job.json()["detail"]
            problem(
                httpx.post(
                    f"{server.url}/v1/sweeps", json={"dataset": "wine"}, headers=BOB, timeout=60
                ),
                507,
                "storage-full",
            )
    finally:
        client.config_set("maxmemory", limit)
    new = {"dataset": "wine", "random_state": 32}
    answer = httpx.post(f"{b.url}/v1/benchmarks", json=new, headers=BOB, timeout=60)
    assert answer.status_code == 200, answer.text


def test_a_frozen_redis_is_a_503_within_its_timeout(cluster: Cluster) -> None:
    # Check that while Redis is frozen (SIGSTOP: it holds its connections and answers
    # nothing) each route that needs it answers 503 with Retry-After after about
    # CLUSTERBENCH_REDIS_TIMEOUT_S, not after two or three of them, also when many ask at
    # once (more than the replica has threads), and that it answers again once Redis
    # resumes.
    b = cluster.b
    stored = httpx.post(
        f"{b.url}/v1/benchmarks", json={"dataset": "iris"}, headers=ALICE, timeout=60
    )
    assert stored.status_code == 200, stored.text
    started = httpx.post(
        f"{b.url}/v1/benchmarks",
        json={"dataset": "iris", "random_state": 35},
        headers={**ALICE, **ASYNC},
        timeout=60,
    )
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    assert poll(b.url, job_id, FINISHED, 60, headers=ALICE)["state"] == "succeeded"
    asks = {
        "a benchmark to compute": ("POST", "/v1/benchmarks", {"dataset": "wine"}, {}),
        "a stored benchmark": ("GET", f"/v1/benchmarks/{stored.json()['id']}", None, {}),
        "a job to start": ("POST", "/v1/benchmarks", {"dataset": "wine", "random_state": 1}, ASYNC),
        "a finished job": ("GET", f"/v1/jobs/{job_id}", None, {}),
        "the jobs": ("GET", "/v1/jobs", None, {}),
    }
    took_at_once: list[float] = []

    def ask_job() -> None:
        began = time.monotonic()
        answer = httpx.get(f"{b.url}/v1/jobs/{job_id}", headers=ALICE, timeout=60)
        problem(answer, 503, "store-unavailable")
        took_at_once.append(time.monotonic() - began)

    with cluster.redis.frozen():
        askers = [threading.Thread(target=ask_job) for _ in range(16)]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join()
        assert len(took_at_once) == len(askers)
        # Past the replica's threads, requests waited one timeout per wave (7 s for 16).
        assert max(took_at_once) < 2.5 * TIMEOUT_S, sorted(took_at_once)
        for what, (method, path, body, headers) in asks.items():
            began = time.monotonic()
            answer = httpx.request(
                method, f"{b.url}{path}", json=body, headers={**ALICE, **headers}, timeout=60
            )
            took = time.monotonic() - began
            problem(answer, 503, "store-unavailable")
            # One timeout and the request's own work: never a second timeout.
            assert took < 1.75 * TIMEOUT_S, f"{what}: 503 after {took:.1f} s"
    deadline = time.monotonic() + 30
    for path in ("/readyz", "/v1/jobs", f"/v1/benchmarks/{stored.json()['id']}"):
        while httpx.get(f"{b.url}{path}", headers=ALICE, timeout=30).status_code != 200:
            assert time.monotonic() < deadline, f"the replica did not recover ({path})"
            time.sleep(0.05)


def test_a_job_whose_result_write_timed_out_but_was_stored_succeeds(cluster: Cluster) -> None:
    # Check that a job whose result write was sent to a frozen Redis (the client gave up,
    # Redis ran it once resumed) ends "succeeded" with its result, not "failed" beside a
    # result that the same question hits.
    a, b = cluster.a, cluster.b
    warm = httpx.post(f"{b.url}/v1/benchmarks", json={"dataset": "iris"}, headers=BOB, timeout=60)
    assert warm.status_code == 200, warm.text  # B's scripts are loaded in Redis
    body = {**SLOW, "random_state": 33}
    failed = 'clusterbench_jobs_finished_total{state="failed"}'
    failed_before = metric(b.url, failed)
    started = httpx.post(f"{b.url}/v1/benchmarks", json=body, headers={**BOB, **ASYNC}, timeout=60)
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    poll(b.url, job_id, ("running",), 60, headers=BOB)
    with cluster.redis.frozen():
        # B knows from its own memory: the write of the result timed out.
        ended = poll(b.url, job_id, FINISHED, 120, headers=BOB)
        assert ended["state"] == "failed", ended
        assert ended["error"]["type"].endswith("store-unavailable"), ended
    final = poll(a.url, job_id, FINISHED, 60, headers=BOB)  # as recorded in Redis
    assert final["state"] == "succeeded", final
    assert final["error"] is None
    assert final["progress"]["done"] == final["progress"]["total"]
    assert poll(b.url, job_id, FINISHED, 30, headers=BOB) == final
    assert metric(b.url, failed) == failed_before
    result = httpx.get(f"{a.url}{final['result_url']}", headers=BOB, timeout=30)
    assert result.status_code == 200, result.text


def test_a_job_whose_record_a_redis_restart_lost_is_written_again(cluster: Cluster) -> None:
    # Check that when Redis restarts without persistence while a job runs, the replica
    # running it writes its record again and finishes it, storing its result: the other
    # replica reports it succeeded (it was cancelled, its result discarded).
    a, b = cluster.a, cluster.b
    body = {**SLOW, "random_state": 34}
    started = httpx.post(f"{b.url}/v1/benchmarks", json=body, headers={**BOB, **ASYNC}, timeout=60)
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    poll(a.url, job_id, ("running",), 60, headers=BOB)
    cluster.redis.stop()
    cluster.redis.start()
    assert redis_of(cluster).dbsize() == 0  # everything is gone, the job's record too
    running = httpx.get(f"{b.url}/v1/jobs/{job_id}", headers=BOB, timeout=30)
    assert running.json()["state"] == "running", "the job ended before Redis restarted"
    # Within a heartbeat (5 s) of B's, well before it ends.
    seen = poll(a.url, job_id, ("running", *FINISHED), 60, headers=BOB, missing_ok=True)
    assert seen["state"] in ("running", "succeeded"), seen
    final = poll(a.url, job_id, FINISHED, 120, headers=BOB)
    assert final["state"] == "succeeded", final
    result = httpx.get(f"{a.url}{final['result_url']}", headers=BOB, timeout=30)
    assert result.status_code == 200, result.text
    listing = httpx.get(f"{a.url}/v1/jobs", headers=BOB, timeout=30)
    assert job_id in [j["id"] for j in listing.json()["jobs"]]
