"""Sweeps and stability runs as jobs, in-process: 202, joins, results, tenants, restarts."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service import benchmark as bm
from service.datasets import DatasetStore
from service.jobs.records import JobStore
from service.jobs.runner import JobRunner
from service.questions import StabilityQuestion, resolve_sweep
from service.schemas import SweepRequest
from service.stability import StabilityParams, stability_id
from tests.conftest import make_settings, serve

pytestmark = pytest.mark.anyio

ASYNC = {"Prefer": "respond-async"}
FINISHED = ("succeeded", "failed", "cancelled")
KEYS = "alice:alice-secret-key-0000000001,bob:bob-secret-key-00000000002"
ALICE = {"Authorization": "Bearer alice-secret-key-0000000001"}
BOB = {"X-API-Key": "bob-secret-key-00000000002"}

# Per kind: the route, a small question on iris (the steps it counts), and a long one on
# digits (tens of seconds: it is cancelled or fails long before it ends).
KINDS: dict[str, dict[str, Any]] = {
    "sweep": {
        "path": "/v1/sweeps",
        "body": {"dataset": "iris", "k": [2, 3, 4], "strategies": ["k-means++", "random"]},
        "steps": 6,
        "long": {
            "k": {"min": 8, "max": 20},
            "strategies": [{"init": "random", "n_init": 500}],
            "tol": 0.0,
        },
    },
    "stability": {
        "path": "/v1/stability",
        "body": {"dataset": "iris", "seeds": 3, "strategies": ["k-means++", "random", "pca"]},
        "steps": 3,
        "long": {"seeds": 20, "strategies": [{"init": "random", "n_init": 500}], "tol": 0.0},
    },
}
kinds = pytest.mark.parametrize("kind", list(KINDS))


@pytest.fixture(scope="module")
async def kinds_client(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(make_settings(tmp_path_factory.mktemp("kinds"), workers=1)) as client:
        yield client


async def finished(
    client: httpx.AsyncClient, job_id: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every state of the job seen while polling it, until it has finished."""
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        seen.append(job)
        if job["state"] in FINISHED:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish: {seen[-1]}")


async def running(client: httpx.AsyncClient, job_id: str) -> None:
    deadline = time.monotonic() + 30
    while (await client.get(f"/v1/jobs/{job_id}")).json()["state"] != "running":
        assert time.monotonic() < deadline, "the job never started"
        await asyncio.sleep(0.02)


def accepted(answer: httpx.Response, kind: str) -> dict[str, Any]:
    assert answer.status_code == 202, answer.text
    job: dict[str, Any] = answer.json()
    assert answer.headers["location"] == f"/v1/jobs/{job['id']}"
    assert answer.headers["preference-applied"] == "respond-async"
    assert "Prefer" in answer.headers["vary"]
    assert job["kind"] == kind
    assert job["state"] in ("queued", "running")
    assert job["result_url"] is None
    return job


@kinds
async def test_202_then_the_result_the_sync_request_gets(
    kinds_client: httpx.AsyncClient, kind: str
) -> None:
    # Check that an async sweep or stability run answers 202 with Location, counts its
    # steps (done never decreasing, reaching total), and that its result at result_url is
    # byte for byte what a sync request gets.
    spec = KINDS[kind]
    job = accepted(await kinds_client.post(spec["path"], json=spec["body"], headers=ASYNC), kind)
    assert job["progress"]["total"] == spec["steps"]
    seen = await finished(kinds_client, job["id"])
    final = seen[-1]
    assert final["state"] == "succeeded", final
    assert final["error"] is None
    assert final["progress"] == {"done": spec["steps"], "total": spec["steps"], "stage": "done"}
    done = [j["progress"]["done"] for j in seen]
    assert done == sorted(done)
    result = await kinds_client.get(final["result_url"])
    assert result.status_code == 200, result.text
    assert final["result_url"] == f"{spec['path']}/{result.json()['id']}"
    # Stored now: with or without the preference, a 200 with the same bytes.
    for headers in (ASYNC, {}):
        again = await kinds_client.post(spec["path"], json=spec["body"], headers=headers)
        assert again.status_code == 200
        assert again.headers["x-cache"] == "hit"
        assert "preference-applied" not in again.headers
        assert again.content == result.content
    listed = (await kinds_client.get("/v1/jobs")).json()["jobs"]
    assert {"id": job["id"], "kind": kind} in [{"id": j["id"], "kind": j["kind"]} for j in listed]


@kinds
async def test_a_sync_request_joins_the_running_job(
    kinds_client: httpx.AsyncClient, kind: str
) -> None:
    # Check that an identical async ask joins the job, and that a sync request for the
    # question a job computes waits on that job's computation (a miss, computed once) and
    # gets the bytes the job stored.
    spec = KINDS[kind]
    body = {**spec["body"], "strategies": [{"init": "random", "n_init": 1000}], "tol": 0.0}
    job = accepted(await kinds_client.post(spec["path"], json=body, headers=ASYNC), kind)
    twin = accepted(await kinds_client.post(spec["path"], json=body, headers=ASYNC), kind)
    assert twin["id"] == job["id"], "identical questions did not join"
    await running(kinds_client, job["id"])
    sync = await kinds_client.post(spec["path"], json=body)
    assert sync.status_code == 200, sync.text
    assert sync.headers["x-cache"] == "miss"
    final = (await finished(kinds_client, job["id"]))[-1]
    assert final["state"] == "succeeded", final
    stored = await kinds_client.get(final["result_url"])
    assert stored.content == sync.content.replace(b'"cached":false', b'"cached":true', 1)


@kinds
async def test_cancel_stops_the_job_and_stores_nothing(
    kinds_client: httpx.AsyncClient, kind: str
) -> None:
    # Check that DELETE cancels a running sweep or stability job (cancelled, the 409
    # problem, no result) and that the question asked again is a new job.
    spec = KINDS[kind]
    job = accepted(await kinds_client.post(spec["path"], json=spec["long"], headers=ASYNC), kind)
    await running(kinds_client, job["id"])
    cancelled = await kinds_client.delete(f"/v1/jobs/{job['id']}")
    assert cancelled.status_code == 200
    final = (await finished(kinds_client, job["id"]))[-1]
    assert final["state"] == "cancelled"
    assert final["error"]["status"] == 409
    assert final["result_url"] is None
    assert (await kinds_client.delete(f"/v1/jobs/{job['id']}")).status_code == 409
    again = await kinds_client.post(spec["path"], json=spec["long"], headers=ASYNC)
    assert accepted(again, kind)["id"] != job["id"]
    assert (await kinds_client.delete(f"/v1/jobs/{again.json()['id']}")).status_code == 200


@kinds
async def test_a_failed_job_says_why(tmp_path: Path, kind: str) -> None:
    # Check that a sweep or stability job past CLUSTERBENCH_TIMEOUT_S fails with the 504
    # problem, and that the question asked again at once gets that problem.
    spec = KINDS[kind]
    async with serve(make_settings(tmp_path, workers=1, timeout_s=0.5)) as client:
        job = accepted(await client.post(spec["path"], json=spec["long"], headers=ASYNC), kind)
        final = (await finished(client, job["id"]))[-1]
        assert final["state"] == "failed", final
        assert final["error"]["status"] == 504
        assert "CLUSTERBENCH_TIMEOUT_S" in final["error"]["detail"]
        assert final["result_url"] is None
        again = await client.post(spec["path"], json=spec["long"], headers=ASYNC)
        assert again.status_code == 504  # remembered, not computed again


@kinds
async def test_a_job_that_has_just_failed_is_not_joined(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Check that the question asked again while its failed job's end is still being
    # written (a slow store; seen on a loaded machine) gets the remembered problem, not
    # the finished job as a new 202: the job showed "failed" before it left the tables
    # the manager joins jobs from.
    release = asyncio.Event()
    persist_end = JobRunner.persist_end

    async def slow_persist_end(self: JobRunner, running: Any, *, unless_stored: bool) -> None:
        await release.wait()
        await persist_end(self, running, unless_stored=unless_stored)

    monkeypatch.setattr(JobRunner, "persist_end", slow_persist_end)
    spec = KINDS[kind]
    async with serve(make_settings(tmp_path, workers=1, timeout_s=0.5)) as client:
        try:
            job = accepted(await client.post(spec["path"], json=spec["long"], headers=ASYNC), kind)
            final = (await finished(client, job["id"]))[-1]
            assert final["state"] == "failed", final
            again = await client.post(spec["path"], json=spec["long"], headers=ASYNC)
            assert again.status_code == 504, again.text
        finally:
            release.set()


@kinds
async def test_jobs_and_their_results_are_their_askers_own(tmp_path: Path, kind: str) -> None:
    # Check that another tenant sees neither the job (get, events, cancel, list) nor its
    # result, and that the asker reads the result at result_url once it has succeeded.
    spec = KINDS[kind]
    async with serve(make_settings(tmp_path, workers=1, api_keys=KEYS)) as client:
        answer = await client.post(spec["path"], json=spec["body"], headers={**ALICE, **ASYNC})
        job = accepted(answer, kind)
        job_url = answer.headers["location"]
        for method, path in (("GET", job_url), ("GET", f"{job_url}/events"), ("DELETE", job_url)):
            assert (await client.request(method, path, headers=BOB)).status_code == 404
        theirs = (await client.get("/v1/jobs", headers=BOB)).json()["jobs"]
        assert job["id"] not in [j["id"] for j in theirs]
        final = (await finished(client, job["id"], ALICE))[-1]
        assert final["state"] == "succeeded", final
        assert (await client.get(final["result_url"], headers=BOB)).status_code == 404
        mine = await client.get(final["result_url"], headers=ALICE)
        assert mine.status_code == 200, mine.text
        assert (await client.get(final["result_url"], headers=BOB)).status_code == 404
        if kind == "sweep":
            assert (await client.get(mine.json()["plot_url"], headers=ALICE)).status_code == 200
            assert (await client.get(mine.json()["plot_url"], headers=BOB)).status_code == 404


def orphan(data_dir: Path, kind: str, key: str, request: dict[str, Any], total: int) -> str:
    """A job left running by a process that is gone; its id."""
    store = JobStore(data_dir / "jobs.sqlite3")
    job, _ = store.create_or_join(
        kind=kind,
        key=key,
        request=request,
        total=total,
        owner=f"999999999-gone@{socket.gethostname()}",
        alive=lambda _: True,
    )
    job.state = "running"
    store.save(job)
    store.close()
    return job.id


async def test_start_up_runs_orphaned_sweeps_and_stability_runs_again(tmp_path: Path) -> None:
    # Check that at start-up a sweep and a stability job whose process is gone run again
    # to the end (their results at result_url), and that jobs that cannot (the question
    # changed, a kind this version does not know, a record it cannot read) fail saying why.
    info = DatasetStore(tmp_path / "datasets").builtin("iris")
    sweep = resolve_sweep(SweepRequest.model_validate({"k": [2, 3]}), info)
    params = StabilityParams(
        bm.BenchmarkParams(dataset=info.id, n_clusters=3, strategies=(bm.Strategy("random", 4),)),
        seeds=(0, 1),
    )
    stability = StabilityQuestion(id=stability_id(params), dataset=info, params=params)
    again = {
        "sweep": orphan(tmp_path, "sweep", sweep.id, sweep.record(), sweep.steps),
        "stability": orphan(tmp_path, "stability", stability.id, stability.record(), 1),
    }
    changed = orphan(tmp_path, "sweep", "1" * 64, sweep.record(), sweep.steps)
    unknown = orphan(tmp_path, "clustering", "2" * 64, {}, 1)
    unreadable = orphan(tmp_path, "stability", "3" * 64, {"dataset": info.id}, 1)
    async with serve(make_settings(tmp_path, workers=1)) as client:
        for kind, job_id in again.items():
            rerun = (await finished(client, job_id))[-1]
            assert rerun["state"] == "succeeded", rerun
            assert rerun["kind"] == kind
            key = sweep.id if kind == "sweep" else stability.id
            assert rerun["result_url"] == f"{KINDS[kind]['path']}/{key}"
            assert rerun["progress"]["done"] == rerun["progress"]["total"]
            assert (await client.get(rerun["result_url"])).status_code == 200
        for job_id, words in (
            (changed, "versions"),
            (unknown, "'clustering'"),
            (unreadable, "cannot be read"),
        ):
            failed = (await client.get(f"/v1/jobs/{job_id}")).json()
            assert failed["state"] == "failed"
            assert failed["error"]["type"].endswith("job-orphaned")
            assert words in failed["error"]["detail"]
