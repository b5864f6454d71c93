"""Two API replicas on one shared data directory and one real redis-server, end to end.

Whatever replica a client reaches answers alike: a result computed on one is a hit on
the other, a question asked of both at once is computed once, a job whose replica is
killed is finished by the other, and a Redis restart is an outage (503) the replicas
recover from by themselves.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from service.datasets import load_builtin
from service.jobs.records import RELEASED, STALE_S
from service.jobs.redis_records import RedisJobStore
from service.process import ServiceProcess
from tests.helpers import ASYNC, FINISHED
from tests.reference import assert_matches, seed_scores
from tests.scaleout import (
    Cluster,
    RedisServer,
    metric,
    on_another_host,
    poll,
    replica,
)

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Cluster]:
    """Redis, then replicas A and B on one data directory."""
    data = tmp_path_factory.mktemp("scaleout") / "data"
    data.mkdir()
    with replica(data, redis_server) as a, replica(data, redis_server) as b:
        yield Cluster(redis_server, a, b)


def test_a_benchmark_posted_to_a_is_a_hit_on_b(cluster: Cluster) -> None:
    # Check that B answers a question A computed from the shared store: the same body
    # bytes, the same plot bytes, without computing.
    a, b = cluster.a, cluster.b
    body = {"dataset": "iris", "strategies": ["k-means++", "pca"], "random_state": 21}
    first = httpx.post(f"{a.url}/v1/benchmarks", json=body, timeout=60)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "miss"
    computed_on_b = metric(b.url, "clusterbench_computations_total")
    second = httpx.post(f"{b.url}/v1/benchmarks", json=body, timeout=60)
    assert second.status_code == 200, second.text
    assert second.headers["x-cache"] == "hit"
    assert second.content == first.content.replace(b'"cached":false', b'"cached":true', 1)
    assert metric(b.url, "clusterbench_computations_total") == computed_on_b
    # Shared through Redis, not through SQLite files in the shared directory.
    assert not (a.data_dir / "cache.sqlite3").exists()
    assert not (a.data_dir / "jobs.sqlite3").exists()
    plot_a = httpx.get(f"{a.url}{first.json()['plot_url']}", timeout=60)
    assert plot_a.status_code == 200
    plot_b = httpx.get(f"{b.url}{first.json()['plot_url']}", timeout=60)
    assert plot_b.headers["content-type"] == "image/png"
    assert plot_b.content == plot_a.content
    # A holds it in memory (a hot hit); deleted through B, A stops serving it as soon as
    # the invalidation arrives (published by the delete itself), and for good.
    url = f"{a.url}/v1/benchmarks/{first.json()['id']}"
    assert httpx.get(url).status_code == 200
    assert httpx.delete(f"{b.url}/v1/benchmarks/{first.json()['id']}").status_code == 204
    deadline = time.monotonic() + 2
    while (status := httpx.get(url).status_code) == 200:
        assert time.monotonic() < deadline, "A serves a benchmark B deleted"
    assert status == 404
    assert httpx.get(url).status_code == 404


def test_the_same_question_asked_of_both_is_computed_once(
    cluster: Cluster,
) -> None:
    # Check that one question sent to A and B at the same moment is computed by one of
    # them (the lease in Redis), and both answer the same numbers.
    a, b = cluster.a, cluster.b
    body = {"strategies": [{"init": "random", "n_init": 40}], "tol": 0.0, "random_state": 22}
    before = sum(metric(r.url, "clusterbench_computations_total") for r in (a, b))
    answers: dict[str, httpx.Response] = {}
    start = threading.Barrier(2)

    def ask(server: ServiceProcess) -> None:
        start.wait()
        answers[server.url] = httpx.post(f"{server.url}/v1/benchmarks", json=body, timeout=120)

    threads = [threading.Thread(target=ask, args=(r,)) for r in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.status_code == 200 for r in answers.values()), answers
    after = sum(metric(r.url, "clusterbench_computations_total") for r in (a, b))
    assert after - before == 1
    results = [r.json()["results"] for r in answers.values()]
    assert results[0] == results[1]
    assert sorted(r.headers["x-cache"] for r in answers.values()) == ["hit", "miss"]


@pytest.mark.parametrize("init", ["k-means++", "random", "pca"])
def test_results_equal_scikit_learn(cluster: Cluster, init: str) -> None:
    # Check that a result computed on A and read from Redis on B equals scikit-learn's.
    a, b = cluster.a, cluster.b
    body = {"dataset": "wine", "strategies": [init], "random_state": 23}
    assert httpx.post(f"{a.url}/v1/benchmarks", json=body, timeout=60).status_code == 200
    answer = httpx.post(f"{b.url}/v1/benchmarks", json=body, timeout=60)
    assert answer.headers["x-cache"] == "hit"
    X, y = load_builtin("wine")
    (result,) = answer.json()["results"]
    assert_matches(
        result, seed_scores(X, y, init, n_clusters=int(np.unique(y).size), random_state=23)
    )


def test_a_job_whose_replica_is_killed_is_finished_by_another(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Check that a job started on a replica killed (-9) mid-job is reported by another
    # replica, which takes it over and runs it to the end, within a bounded time.
    redis, b = cluster.redis, cluster.b
    doomed = replica(b.data_dir, redis)
    doomed.start()
    body = {"strategies": [{"init": "random", "n_init": 400}], "tol": 0.0, "random_state": 24}
    descendants: list[psutil.Process] = []
    try:
        started = httpx.post(f"{doomed.url}/v1/benchmarks", json=body, headers=ASYNC, timeout=60)
        assert started.status_code == 202, started.text
        job_id = started.json()["id"]
        assert poll(b.url, job_id, ("running",), 60)["state"] == "running"
        assert doomed.process is not None
        descendants = psutil.Process(doomed.process.pid).children(recursive=True)
        doomed.process.kill()
        doomed.process.wait()
    finally:
        doomed.stop()
        # The workers outlive a SIGKILLed parent until their task ends: end them now.
        for process in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
    # Well within the sweep for orphans (SWEEP_S, 30 s): B takes the job over when asked.
    final = poll(b.url, job_id, FINISHED, 20)
    assert final["state"] == "succeeded", final
    assert final["progress"]["done"] == final["progress"]["total"] == 1
    result = httpx.get(f"{b.url}{final['result_url']}", timeout=30)
    assert result.status_code == 200


def test_a_job_of_a_replica_stopped_on_another_host_is_taken_over_at_once(
    cluster: Cluster,
) -> None:
    # Check that a replica on another host (a container) stopped by SIGTERM hands its
    # running job over as its grace period ends: another replica takes it over as soon as
    # it is asked, long before the stopped one's heartbeat is STALE_S old (the only sign
    # of a replica that is gone across hosts), and runs it to the end.
    redis, b = cluster.redis, cluster.b
    stopped = replica(
        b.data_dir, redis, CLUSTERBENCH_SHUTDOWN_GRACE_S="1", **on_another_host("elsewhere")
    )
    stopped.start()
    body = {"strategies": [{"init": "random", "n_init": 400}], "tol": 0.0, "random_state": 27}
    records = RedisJobStore(redis.url)
    try:
        started = httpx.post(f"{stopped.url}/v1/benchmarks", json=body, headers=ASYNC, timeout=60)
        assert started.status_code == 202, started.text
        job_id = started.json()["id"]
        assert poll(b.url, job_id, ("running",), 60)["state"] == "running"
        record = records.get(job_id)
        assert record is not None
        owner = record.owner
        assert owner.endswith("@elsewhere"), owner
        assert stopped.process is not None
        stopped.process.send_signal(signal.SIGTERM)
        assert stopped.process.wait(timeout=60) == 0
        # The stopped replica's last heartbeat is at most HEARTBEAT_S old: left behind,
        # its job could not be taken over for STALE_S - HEARTBEAT_S from now.
        deadline = time.monotonic() + STALE_S / 2
        while (record := records.get(job_id)) is not None and record.owner in (owner, RELEASED):
            assert time.monotonic() < deadline, f"not taken over from {record.owner}"
            assert httpx.get(f"{b.url}/v1/jobs/{job_id}", timeout=30).status_code == 200
            time.sleep(0.05)
    finally:
        stopped.stop()
        records.close()
    final = poll(b.url, job_id, FINISHED, 120)
    assert final["state"] == "succeeded", final
    assert final["progress"]["done"] == final["progress"]["total"] == 1
    assert httpx.get(f"{b.url}{final['result_url']}", timeout=30).status_code == 200


def test_a_redis_restart_is_an_outage_the_replicas_recover_from(
    cluster: Cluster,
) -> None:
    # Check that while Redis is stopped every replica answers 503 problem+json with
    # Retry-After (never a 500, never a hang) and /readyz says 503, and that once Redis
    # is back on its port they answer again, without a restart.
    redis, a, b = cluster.redis, cluster.a, cluster.b
    body = {"dataset": "iris", "strategies": ["random"], "random_state": 25}
    assert httpx.post(f"{a.url}/v1/benchmarks", json=body, timeout=60).status_code == 200
    redis.stop()
    try:
        for server in (a, b):
            # A hot hit may be answered from memory until the replica's listener sees the
            # connection drop (milliseconds); then the memory layer is off.
            began = time.monotonic()
            while (answer := httpx.post(f"{server.url}/v1/benchmarks", json=body)).is_success:
                assert time.monotonic() - began < 2, "a replica answers from memory"
            assert answer.status_code == 503, answer.text
            began = time.monotonic()
            answer = httpx.post(f"{server.url}/v1/benchmarks", json=body, timeout=30)
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert int(answer.headers["retry-after"]) > 0
            assert "Redis" in answer.json()["detail"]
            assert time.monotonic() - began < 10
            ready = httpx.get(f"{server.url}/readyz", timeout=30)
            assert ready.status_code == 503
            assert "retry-after" in ready.headers
            listing = httpx.get(f"{server.url}/v1/jobs", timeout=30)
            assert listing.status_code == 503
    finally:
        redis.start()
    for server in (a, b):
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "a replica did not recover"
            time.sleep(0.05)
        answer = httpx.post(f"{server.url}/v1/benchmarks", json=body, timeout=60)
        assert answer.status_code == 200, answer.text


def test_a_job_that_ends_while_redis_is_away_is_recorded_once_it_is_back(
    cluster: Cluster,
) -> None:
    # Check that a job whose computation ends while Redis is stopped is not left
    # "running" for ever: its replica writes its end once Redis is back, and the other
    # replica reports it finished, saying why it failed.
    redis, a, b = cluster.redis, cluster.a, cluster.b
    body = {"strategies": [{"init": "random", "n_init": 300}], "tol": 0.0, "random_state": 26}
    started = httpx.post(f"{a.url}/v1/benchmarks", json=body, headers=ASYNC, timeout=60)
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    poll(b.url, job_id, ("running",), 60)
    redis.stop()
    try:
        ended = poll(a.url, job_id, FINISHED, 60)  # A knows, from its own memory
    finally:
        redis.start()
    assert ended["state"] == "failed"
    assert ended["error"]["type"].endswith("store-unavailable")
    final = poll(b.url, job_id, FINISHED, 20)
    assert final["state"] == "failed"
    assert final["error"]["type"].endswith("store-unavailable")
    answer = httpx.post(f"{b.url}/v1/benchmarks", json=body, timeout=60)  # asked again
    assert answer.status_code == 200, answer.text
