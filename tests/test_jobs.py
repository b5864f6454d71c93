"""Jobs end to end, on real servers: 202 and Location, progress, events, cancel, restart."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from service.process import ServiceProcess
from tests.helpers import (
    ASYNC,
    FINISHED,
    busy_worker,
    cpu_stopped,
    long_job,
    read_events,
    submit,
    wait_for,
)

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(make_server: Callable[..., ServiceProcess]) -> ServiceProcess:
    return make_server("jobs", digits=True, CLUSTERBENCH_EVENTS_PING_S="0.5")


# Three strategies, about a second each: progress has steps to show.
STEPPED = {
    "strategies": [
        {"init": "random", "n_init": 150},
        {"init": "k-means++", "n_init": 60},
        "pca",
    ],
    "tol": 0.0,
    "random_state": 3,
}


def metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def test_202_location_progress_and_result(server: ServiceProcess) -> None:
    # Check that an async benchmark answers 202 with Location, that its progress never
    # decreases and ends at total, and that its result is the stored one a sync request gets.
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job = submit(client, STEPPED)
        assert job["kind"] == "benchmark"
        assert job["state"] in ("queued", "running")
        assert job["progress"]["total"] == 3
        seen = wait_for(client, job["id"], FINISHED)
        final = seen[-1]
        assert final["state"] == "succeeded", final
        done = [j["progress"]["done"] for j in seen]
        assert done == sorted(done)
        assert final["progress"] == {"done": 3, "total": 3, "stage": "done"}
        assert len(set(done)) >= 2, "no step was seen between start and end"
        assert final["error"] is None
        assert final["created_at"] <= final["started_at"] <= final["finished_at"]
        result = client.get(final["result_url"])
        assert result.status_code == 200
        # A stored result answers 200 at once, with or without the preference.
        again = client.post("/v1/benchmarks", json=STEPPED, headers=ASYNC)
        assert again.status_code == 200
        assert again.headers["x-cache"] == "hit"
        assert again.content == result.content


def test_sync_and_async_answers_are_identical(server: ServiceProcess, tmp_path: Path) -> None:
    # Check that a sync request asked while the same question runs as a job joins that
    # computation and gets the bytes the job stored (but "cached"), and that a fresh
    # server computing it synchronously gets the same numbers.
    body = {**STEPPED, "random_state": 4}
    with httpx.Client(base_url=server.url, timeout=120) as client:
        job = submit(client, body)
        assert submit(client, body)["id"] == job["id"], "identical questions did not join"
        sync = client.post("/v1/benchmarks", json=body)
        assert sync.status_code == 200
        assert sync.headers["x-cache"] == "miss", "the sync request computed apart from the job"
        final = wait_for(client, job["id"], FINISHED)[-1]
        assert final["state"] == "succeeded"
        stored = client.get(final["result_url"])
    assert stored.content == sync.content.replace(b'"cached":false', b'"cached":true', 1)
    other = ServiceProcess(tmp_path / "data")
    other.data_dir.mkdir()
    with other:
        fresh = httpx.post(f"{other.url}/v1/benchmarks", json=body, timeout=120).json()
    for mine, theirs in zip(sync.json()["results"], fresh["results"], strict=True):
        mine.pop("fit_time")
        theirs.pop("fit_time")
        assert mine == theirs
    assert fresh["id"] == sync.json()["id"]


def test_events_arrive_in_order_and_the_stream_ends(server: ServiceProcess) -> None:
    # Check that a job's event stream sends progress events whose done never decreases,
    # keep-alive comments, then one final "succeeded" event, and ends.
    body = {**STEPPED, "random_state": 5}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job = submit(client, body)
        events: list[tuple[str, Any]] = []
        with client.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            read_events(response, events)
    names = [name for name, _ in events if name != "comment"]
    assert names[-1] == "succeeded"
    assert set(names[:-1]) == {"progress"}
    assert len(names) >= 3
    done = [data["progress"]["done"] for name, data in events if name != "comment"]
    assert done == sorted(done)
    assert events[-1][1]["progress"] == {"done": 3, "total": 3, "stage": "done"}
    # The 0.5 s pings of CLUSTERBENCH_EVENTS_PING_S, during a job of a few seconds.
    assert any(name == "comment" for name, _ in events)


def test_a_client_that_leaves_the_event_stream_costs_nothing(server: ServiceProcess) -> None:
    # Check that when a client drops its event stream, the server stops following the
    # job for it (the open-streams gauge goes back to 0) and the job goes on.
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job = submit(client, long_job(11))
        try:
            wait_for(client, job["id"], ("running",))
            with client.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
                # Held: an iterator dropped at once would close the stream (httpx does).
                lines = response.iter_lines()
                first = next(lines)
                now = client.get(f"/v1/jobs/{job['id']}").json()
                assert first == "event: progress", now
                assert metric(client, "clusterbench_job_event_streams") == 1, now
            deadline = time.monotonic() + 5
            while metric(client, "clusterbench_job_event_streams") != 0:
                assert time.monotonic() < deadline, "the stream is still followed"
                time.sleep(0.05)
            assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "running"
        finally:
            # Not left running for the tests after this one, which watch the CPU.
            client.delete(f"/v1/jobs/{job['id']}")


def test_cancel_frees_the_cpu_within_2_s(server: ServiceProcess) -> None:
    # Check that DELETE stops a running job's worker (its CPU time stops growing within
    # 2 s), the job says cancelled, nothing is stored, and a second DELETE is a 409.
    body = long_job(12)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job = submit(client, body)
        wait_for(client, job["id"], ("running",))
        worker = busy_worker(server)
        misses = metric(client, "clusterbench_benchmark_cache_misses_total")
        # A sync request for the same question waits on the job's computation.
        waiting: dict[str, httpx.Response] = {}
        joiner = threading.Thread(
            target=lambda: waiting.update(r=client.post("/v1/benchmarks", json=body))
        )
        joiner.start()
        deadline = time.monotonic() + 10
        while metric(client, "clusterbench_benchmark_cache_misses_total") < misses + 1:
            assert time.monotonic() < deadline, "the sync request never arrived"
            time.sleep(0.02)
        began = time.monotonic()
        cancelled = client.delete(f"/v1/jobs/{job['id']}")
        assert cancelled.status_code == 200
        freed = cpu_stopped(worker, deadline_s=2.0) + (time.monotonic() - began)
        assert freed < 2.0
        joiner.join(timeout=30)
        assert waiting["r"].status_code == 409
        assert waiting["r"].json()["type"].endswith("compute-cancelled")
        final = wait_for(client, job["id"], FINISHED)[-1]
        assert final["state"] == "cancelled"
        assert final["error"]["status"] == 409
        assert final["result_url"] is None
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 409
        # Nothing stored: the same question asked again is a new job, not a hit.
        again = client.post("/v1/benchmarks", json=body, headers=ASYNC)
        assert again.status_code == 202
        assert again.json()["id"] != job["id"]
        client.delete(f"/v1/jobs/{again.json()['id']}")
        listed = client.get("/v1/jobs", params={"state": "cancelled"}).json()["jobs"]
        assert job["id"] in [j["id"] for j in listed]


def test_a_failed_job_says_why_and_stores_nothing(tmp_path: Path) -> None:
    # Check that a job past CLUSTERBENCH_TIMEOUT_S ends "failed" with the 504 problem,
    # its event stream ends with "failed", and no result is stored.
    instance = ServiceProcess(tmp_path / "data", CLUSTERBENCH_TIMEOUT_S="1")
    instance.data_dir.mkdir()
    with instance, httpx.Client(base_url=instance.url, timeout=60) as client:
        job = submit(client, long_job(13))
        events: list[tuple[str, Any]] = []
        with client.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
            read_events(response, events)
        assert events[-1][0] == "failed"
        final = client.get(f"/v1/jobs/{job['id']}").json()
        assert final["state"] == "failed"
        assert final["error"]["status"] == 504
        assert "CLUSTERBENCH_TIMEOUT_S" in final["error"]["detail"]
        sync = client.post("/v1/benchmarks", json=long_job(13))
        assert sync.status_code == 504  # remembered, not computed again
        listed = client.get("/v1/jobs", params={"state": "succeeded"}).json()
        assert listed["jobs"] == []


def test_a_job_survives_kill_9_of_its_server(tmp_path: Path) -> None:
    # Check that when the server is killed (-9) mid-job, a server started on the same
    # data directory runs the job again to the end.
    data = tmp_path / "data"
    data.mkdir()
    body = long_job(14, n_init=600)
    first = ServiceProcess(data)
    first.start()
    try:
        with httpx.Client(base_url=first.url, timeout=60) as client:
            job = submit(client, body)
            wait_for(client, job["id"], ("running",))
            busy_worker(first)
            assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "running"
        assert first.process is not None
        descendants = psutil.Process(first.process.pid).children(recursive=True)
        first.process.kill()
        first.process.wait()
    finally:
        first.stop()
    # The workers outlive a SIGKILLed parent until their task ends: end them now.
    for process in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    with ServiceProcess(data) as second, httpx.Client(base_url=second.url, timeout=60) as client:
        final = wait_for(client, job["id"], FINISHED)[-1]
        assert final["state"] == "succeeded", final
        assert final["progress"]["done"] == final["progress"]["total"] == 1
        assert client.get(final["result_url"]).status_code == 200


def test_jobs_wait_for_a_full_pool(tmp_path: Path) -> None:
    # Check that with one worker and no queue, a second job waits "queued" (where a sync
    # request would get 503) and runs once the first is done.
    instance = ServiceProcess(
        tmp_path / "data", CLUSTERBENCH_WORKERS="1", CLUSTERBENCH_QUEUE_SIZE="0"
    )
    instance.data_dir.mkdir()
    with instance, httpx.Client(base_url=instance.url, timeout=60) as client:
        first = submit(client, long_job(15, n_init=200))
        wait_for(client, first["id"], ("running",))
        second = submit(client, long_job(16, n_init=20))
        busy = client.post("/v1/benchmarks", json=long_job(17, n_init=20))
        assert busy.status_code == 503
        assert client.get(f"/v1/jobs/{second['id']}").json()["state"] == "queued"
        metrics = client.get("/metrics").text
        assert "clusterbench_jobs_queued 1.0" in metrics
        assert "clusterbench_jobs_running 1.0" in metrics
        for job in (first, second):
            assert wait_for(client, job["id"], FINISHED)[-1]["state"] == "succeeded"
        metrics = client.get("/metrics").text
        assert 'clusterbench_jobs_finished_total{state="succeeded"} 2.0' in metrics
        assert "clusterbench_job_duration_seconds_count 2.0" in metrics


def test_a_slow_event_reader_does_not_hold_the_job(server: ServiceProcess) -> None:
    # Check that events of a job followed by two clients at once reach both, in order.
    body = {**STEPPED, "random_state": 6}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job = submit(client, body)
        streams: list[list[tuple[str, Any]]] = [[], []]

        def follow(into: list[tuple[str, Any]]) -> None:
            with client.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
                read_events(response, into)

        readers = [threading.Thread(target=follow, args=(s,)) for s in streams]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(timeout=60)
    for events in streams:
        assert [n for n, _ in events if n != "comment"][-1] == "succeeded"


def test_a_job_cancelled_through_another_process_stops(tmp_path: Path) -> None:
    # Check that two servers on one data directory share jobs: the second sees the
    # first's job, joins it when asked the same, and its DELETE stops the first's worker.
    data = tmp_path / "data"
    data.mkdir()
    body = long_job(18)
    one_worker = {"CLUSTERBENCH_WORKERS": "1"}
    with ServiceProcess(data, **one_worker) as first, ServiceProcess(data, **one_worker) as second:
        with httpx.Client(base_url=first.url, timeout=60) as one:
            job = submit(one, body)
            wait_for(one, job["id"], ("running",))
            worker = busy_worker(first)
        with httpx.Client(base_url=second.url, timeout=60) as two:
            assert two.get(f"/v1/jobs/{job['id']}").json()["state"] == "running"
            assert submit(two, body)["id"] == job["id"]
            began = time.monotonic()
            assert two.delete(f"/v1/jobs/{job['id']}").json()["state"] == "cancelled"
            # The first notices within a second, then stops its worker.
            stopped = cpu_stopped(worker, deadline_s=3.0) + (time.monotonic() - began)
            assert stopped < 3.0
            # Nothing was stored: asked again, the question is a new job.
            again = submit(two, body)
            assert again["id"] != job["id"]
            two.delete(f"/v1/jobs/{again['id']}")
        with httpx.Client(base_url=first.url, timeout=60) as one:
            assert one.get(f"/v1/jobs/{job['id']}").json()["state"] == "cancelled"
