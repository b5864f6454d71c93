"""Sweeps and stability runs as jobs, on real servers: events, results, cancel, kill -9."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from service.process import ServiceProcess
from tests.helpers import ASYNC, FINISHED, busy_worker, cpu_stopped, read_events, wait_for

pytestmark = pytest.mark.server

# Per kind: the route, a question on digits of three steps of about a second each, and
# one of minutes (cancelled or killed long before it ends).
KINDS: dict[str, dict[str, Any]] = {
    "sweep": {
        "path": "/v1/sweeps",
        "stepped": {
            "k": [2, 3, 4],
            "strategies": [{"init": "random", "n_init": 100}],
            "tol": 0.0,
        },
        "long": {
            "k": {"min": 8, "max": 20},
            "strategies": [{"init": "random", "n_init": 1000}],
            "tol": 0.0,
        },
    },
    "stability": {
        "path": "/v1/stability",
        "stepped": {
            "seeds": 3,
            "strategies": [
                {"init": "random", "n_init": 40},
                {"init": "k-means++", "n_init": 15},
                "pca",
            ],
            "tol": 0.0,
        },
        "long": {"seeds": 20, "strategies": [{"init": "random", "n_init": 1000}], "tol": 0.0},
    },
}
kinds = pytest.mark.parametrize("kind", list(KINDS))


@pytest.fixture(scope="module")
def server(make_server: Callable[..., ServiceProcess]) -> ServiceProcess:
    return make_server("job-kinds", digits=True, CLUSTERBENCH_EVENTS_PING_S="0.5")


def submit(client: httpx.Client, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(KINDS[kind]["path"], json=body, headers=ASYNC)
    assert answer.status_code == 202, answer.text
    job: dict[str, Any] = answer.json()
    assert answer.headers["location"] == f"/v1/jobs/{job['id']}"
    assert answer.headers["preference-applied"] == "respond-async"
    assert job["kind"] == kind
    return job


@kinds
def test_events_then_the_result_a_sync_request_gets(server: ServiceProcess, kind: str) -> None:
    # Check that an async sweep or stability run sends progress events step by step
    # (done never decreasing), then "succeeded", and that its result at result_url is
    # byte for byte what a sync request for the same question gets.
    spec = KINDS[kind]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job = submit(client, kind, spec["stepped"])
        events: list[tuple[str, Any]] = []
        with client.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
            assert response.status_code == 200
            read_events(response, events)
        named = [(name, data) for name, data in events if name != "comment"]
        assert named[-1][0] == "succeeded", named[-1]
        assert {name for name, _ in named[:-1]} == {"progress"}
        done = [data["progress"]["done"] for _, data in named]
        assert done == sorted(done)
        assert named[-1][1]["progress"] == {"done": 3, "total": 3, "stage": "done"}
        assert any(0 < d < 3 for d in done), f"no step was seen between start and end: {done}"
        result = client.get(named[-1][1]["result_url"])
        assert result.status_code == 200
        sync = client.post(spec["path"], json=spec["stepped"])
        assert sync.status_code == 200
        assert sync.headers["x-cache"] == "hit"
        assert sync.content == result.content


@kinds
def test_cancel_frees_the_cpu_within_2_s(server: ServiceProcess, kind: str) -> None:
    # Check that DELETE stops the worker of a running sweep or stability job within 2 s.
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job = submit(client, kind, KINDS[kind]["long"])
        wait_for(client, job["id"], ("running",))
        worker = busy_worker(server)
        began = time.monotonic()
        cancelled = client.delete(f"/v1/jobs/{job['id']}")
        assert cancelled.status_code == 200
        freed = cpu_stopped(worker, deadline_s=2.0) + (time.monotonic() - began)
        assert freed < 2.0
        final = wait_for(client, job["id"], FINISHED)[-1]
        assert final["state"] == "cancelled"
        assert final["result_url"] is None


def test_a_sweep_job_survives_kill_9_of_its_server(tmp_path: Path) -> None:
    # Check that when the server is killed (-9) mid-sweep, a server started on the same
    # data directory runs the sweep job again to the end, its result at result_url.
    data = tmp_path / "data"
    data.mkdir()
    body = {"k": [2, 3], "strategies": [{"init": "random", "n_init": 1000}], "tol": 0.0}
    first = ServiceProcess(data)
    first.start()
    try:
        with httpx.Client(base_url=first.url, timeout=60) as client:
            job = submit(client, "sweep", body)
            wait_for(client, job["id"], ("running",))
            busy_worker(first)
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
        assert final["kind"] == "sweep"
        assert final["progress"]["done"] == final["progress"]["total"] == 2
        result = client.get(final["result_url"])
        assert result.status_code == 200
        assert [r["k"] for r in result.json()["results"]] == [2, 3]
