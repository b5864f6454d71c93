"""Tenants on a real server: each sees only what it sent or asked for, on every route."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.datasets import is_id
from service.process import ServiceProcess, free_port
from tests.helpers import FINISHED, KEY_A, KEY_B, A, B, csv, start_tenants_server, upload

pytestmark = pytest.mark.server


def dataset_dirs(server: ServiceProcess) -> set[str]:
    return {p.name for p in (server.data_dir / "datasets").iterdir() if is_id(p.name)}


@pytest.fixture(scope="module")
def tenants_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    server = start_tenants_server(tmp_path_factory, "tenants")
    yield server
    server.stop()


@pytest.fixture
def http(tenants_server: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tenants_server.url, timeout=120) as client:
        yield client


def test_every_route_hides_one_tenants_data_from_another(http: httpx.Client) -> None:
    # Check that B cannot list, read, use, plot, predict with or delete anything of A's,
    # while A can, on each route.
    made = upload(http, A, csv(40))
    assert made.status_code == 201, made.text
    dataset_id = made.json()["id"]
    run = http.post(
        "/v1/benchmarks", json={"dataset": dataset_id, "strategies": ["random"]}, headers=A
    )
    assert run.status_code == 200, run.text
    benchmark_id = run.json()["id"]
    model_id = run.json()["results"][0]["model_id"]
    predict = {"X": [[0.0, 0.0]]}

    reads = [
        ("GET", f"/v1/datasets/{dataset_id}", None),
        ("GET", f"/v1/benchmarks/{benchmark_id}", None),
        ("GET", f"/v1/benchmarks/{benchmark_id}/plot.png", None),
        ("GET", f"/v1/models/{model_id}", None),
        ("POST", f"/v1/models/{model_id}/predict", predict),
    ]
    for method, path, body in reads:
        theirs = http.request(method, path, json=body, headers=B)
        assert theirs.status_code == 404, (path, theirs.text)
        assert theirs.headers["content-type"] == "application/problem+json"
        assert http.request(method, path, json=body, headers=A).status_code == 200, path

    listed = {d["id"] for d in http.get("/v1/datasets", headers=B).json()["datasets"]}
    assert dataset_id not in listed
    assert {"digits", "iris", "wine", "breast_cancer"} <= {
        d["name"] for d in http.get("/v1/datasets", headers=B).json()["datasets"]
    }
    assert dataset_id in {d["id"] for d in http.get("/v1/datasets", headers=A).json()["datasets"]}

    # Naming A's dataset in a benchmark: as if it did not exist.
    named = http.post("/v1/benchmarks", json={"dataset": dataset_id}, headers=B)
    assert named.status_code == 422
    assert "unknown dataset" in named.json()["detail"]

    assert http.delete(f"/v1/datasets/{dataset_id}", headers=B).status_code == 404
    assert http.get(f"/v1/datasets/{dataset_id}", headers=A).status_code == 200


def test_a_cached_answer_reaches_only_a_tenant_holding_the_data(http: httpx.Client) -> None:
    # Check that B gets A's cached benchmark only once B has sent the same data itself:
    # not by naming its id, not with A's very request bytes (the in-memory hot hit).
    X = [[0.0, 0.1], [0.2, 0.0], [0.1, 0.2], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0], [5.1, 5.2]]
    inline = {"X": X, "n_clusters": 2, "strategies": ["k-means++"], "random_state": 3}
    first = http.post("/v1/benchmarks", json=inline, headers=A)
    assert first.status_code == 200, first.text
    body = first.json()
    dataset_id = body["dataset"]["id"]
    by_id = (
        b'{"dataset": "%s", "n_clusters": 2, "strategies": ["k-means++"], "random_state": 3}'
        % (dataset_id.encode())
    )
    mine = http.post(
        "/v1/benchmarks", content=by_id, headers={**A, "Content-Type": "application/json"}
    )
    assert mine.status_code == 200
    assert mine.json()["id"] == body["id"]
    again = http.post(
        "/v1/benchmarks", content=by_id, headers={**A, "Content-Type": "application/json"}
    )
    assert again.headers["x-cache"] == "hit"

    # The same bytes from B: the hot in-memory hit must not answer it.
    theirs = http.post(
        "/v1/benchmarks", content=by_id, headers={**B, "Content-Type": "application/json"}
    )
    assert theirs.status_code == 422, theirs.text
    assert http.get(f"/v1/benchmarks/{body['id']}", headers=B).status_code == 404
    model_id = body["results"][0]["model_id"]
    assert http.get(f"/v1/models/{model_id}", headers=B).status_code == 404

    # B sends the data itself: the same answer, from the cache, and B holds it now.
    shared = http.post("/v1/benchmarks", json=inline, headers=B)
    assert shared.status_code == 200
    assert shared.headers["x-cache"] == "hit"
    assert shared.json()["id"] == body["id"]
    assert http.get(f"/v1/benchmarks/{body['id']}", headers=B).status_code == 200
    assert http.get(f"/v1/models/{model_id}", headers=B).status_code == 200
    hot = http.post(
        "/v1/benchmarks", content=by_id, headers={**B, "Content-Type": "application/json"}
    )
    assert hot.status_code == 200
    assert hot.headers["x-cache"] == "hit"


def test_same_bytes_are_stored_once_and_survive_one_tenants_delete(
    http: httpx.Client, tenants_server: ServiceProcess
) -> None:
    # Check that the same upload from A and B is one directory on disk, that A's DELETE
    # removes only A's hold, and that B's (the last) removes the bytes.
    data = csv(30, shift=100.0)
    before = dataset_dirs(tenants_server)
    first = upload(http, A, data)
    second = upload(http, B, data)
    # New to each of them: B is not told that someone else sent the same bytes.
    assert (first.status_code, second.status_code) == (201, 201)
    assert upload(http, B, data).status_code == 200
    dataset_id = first.json()["id"]
    assert second.json()["id"] == dataset_id
    assert dataset_dirs(tenants_server) - before == {dataset_id}

    assert http.delete(f"/v1/datasets/{dataset_id}", headers=A).status_code == 204
    assert http.get(f"/v1/datasets/{dataset_id}", headers=A).status_code == 404
    assert http.delete(f"/v1/datasets/{dataset_id}", headers=A).status_code == 404
    assert http.get(f"/v1/datasets/{dataset_id}", headers=B).status_code == 200
    assert dataset_id in dataset_dirs(tenants_server)
    run = http.post(
        "/v1/benchmarks", json={"dataset": dataset_id, "strategies": ["random"]}, headers=B
    )
    assert run.status_code == 200

    assert http.delete(f"/v1/datasets/{dataset_id}", headers=B).status_code == 204
    assert dataset_id not in dataset_dirs(tenants_server)


def keys_cli(server: ServiceProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLUSTERBENCH_DATA_DIR": str(server.data_dir)}
    env.pop("CLUSTERBENCH_API_KEYS", None)
    return subprocess.run(
        [sys.executable, "-m", "service", "keys", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_keys_from_the_cli_work_until_revoked(
    http: httpx.Client, tenants_server: ServiceProcess
) -> None:
    # Check that a key made by the CLI against the server's data directory works at once,
    # is stored only as a hash, and gets 401 once revoked; no key or a wrong one is 401.
    made = keys_cli(tenants_server, "create", "carol")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert len(key) > 40
    assert "carol" in keys_cli(tenants_server, "list").stdout
    assert key.encode() not in (tenants_server.data_dir / "tenants.sqlite3").read_bytes()

    carol = {"Authorization": f"Bearer {key}"}
    assert http.get("/v1/datasets", headers=carol).status_code == 200
    for headers in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"}):
        refused = http.get("/v1/datasets", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.headers["content-type"] == "application/problem+json"

    revoked = keys_cli(tenants_server, "revoke", "carol")
    assert revoked.returncode == 0, revoked.stderr
    gone = http.get("/v1/datasets", headers=carol)
    assert gone.status_code == 401
    assert "invalid_token" in gone.headers["www-authenticate"]
    assert keys_cli(tenants_server, "revoke", "carol").returncode == 1
    # The operations routes stay open.
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert http.get(path).status_code == 200, path


def test_keys_named_in_the_servers_environment_cannot_be_made_again(
    tenants_server: ServiceProcess,
) -> None:
    # Check that `keys create` run without the server's CLUSTERBENCH_API_KEYS still
    # refuses a name that has a key there (a second key for alice), and lists it.
    made = keys_cli(tenants_server, "create", "alice")
    assert made.returncode == 1
    assert "CLUSTERBENCH_API_KEYS" in made.stderr
    assert not made.stdout
    listed = keys_cli(tenants_server, "list")
    assert "alice\tenvironment" in listed.stdout
    assert KEY_A not in listed.stdout


def test_metrics_name_tenants_only_when_asked(
    http: httpx.Client, quota_server: ServiceProcess
) -> None:
    # Check that the open /metrics names no tenant by default, and with
    # CLUSTERBENCH_METRICS_TENANTS counts each tenant's requests under its key's name,
    # never the key.
    http.get("/v1/datasets", headers=A)
    http.get("/v1/datasets", headers=B)
    text = http.get("/metrics").text
    assert "clusterbench_http_requests_total" in text
    assert "alice" not in text
    assert "bob" not in text
    with httpx.Client(base_url=quota_server.url, timeout=60) as asked:
        asked.get("/v1/datasets", headers=A)
        text = asked.get("/metrics").text
    assert 'clusterbench_tenant_requests_total{tenant="alice"}' in text
    assert KEY_A not in text
    assert KEY_B not in text


def test_wrong_keys_are_limited_per_address(quota_server: ServiceProcess) -> None:
    # Check that one address gets 401 for CLUSTERBENCH_AUTH_FAILURE_LIMIT (20/minute)
    # missing or wrong keys, then 429 with Retry-After whatever key it sends, while a
    # tenant calling from another address is served.
    guesser = httpx.Client(
        base_url=quota_server.url,
        timeout=60,
        transport=httpx.HTTPTransport(local_address="127.0.0.5"),
    )
    statuses = []
    with guesser:
        for attempt in range(40):
            headers = {"X-API-Key": f"guess-{attempt:032d}"} if attempt % 2 else {}
            statuses.append(guesser.get("/v1/datasets", headers=headers).status_code)
            if statuses[-1] != 401:
                break
        assert statuses == [401] * 20 + [429]
        refused = guesser.get("/v1/datasets", headers=A)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "CLUSTERBENCH_AUTH_FAILURE_LIMIT" in refused.json()["detail"]
    with httpx.Client(
        base_url=quota_server.url,
        timeout=60,
        transport=httpx.HTTPTransport(local_address="127.0.0.6"),
    ) as other:
        assert other.get("/v1/datasets", headers=B).status_code == 200


def test_short_keys_are_refused_at_start_up(tmp_path: Path) -> None:
    # Check that a key in CLUSTERBENCH_API_KEYS shorter than 24 characters stops the
    # server before it serves, with one line naming the entry and never a key.
    env = {
        **os.environ,
        "CLUSTERBENCH_DATA_DIR": str(tmp_path / "data"),
        "CLUSTERBENCH_PORT": str(free_port()),
        "CLUSTERBENCH_API_KEYS": f"alice:{KEY_A},bob:bob-key-0002",
    }
    done = subprocess.run(
        [sys.executable, "-m", "service"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "'bob'" in done.stderr
    assert "shorter than 24 characters" in done.stderr
    assert "Traceback" not in done.stderr
    assert "bob-key-0002" not in done.stderr
    assert KEY_A not in done.stderr


QUOTA = 6000


@pytest.fixture(scope="module")
def quota_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    server = start_tenants_server(
        tmp_path_factory,
        "quota",
        CLUSTERBENCH_TENANT_QUOTA_BYTES=str(QUOTA),
        CLUSTERBENCH_RATE_LIMIT="20/minute",
        CLUSTERBENCH_METRICS_TENANTS="true",
    )
    yield server
    server.stop()


def test_quota_refuses_what_would_pass_it(quota_server: ServiceProcess) -> None:
    # Check that an upload past the tenant's quota is 403 quota-exceeded saying used and
    # allowed bytes, stores nothing, and fits again once the tenant deleted something.
    with httpx.Client(base_url=quota_server.url, timeout=60) as http:
        http.get("/v1/datasets", headers=A)  # the built-ins are written on first use
        before = dataset_dirs(quota_server)
        first = upload(http, A, csv(120))  # 120 x 2 float64 and labels: about 3 KB stored
        assert first.status_code == 201, first.text
        refused = upload(http, A, csv(120, shift=1.0))
        assert refused.status_code == 403, refused.text
        problem = refused.json()
        assert problem["type"].endswith("quota-exceeded")
        used, allowed = problem["errors"][0]["used"], problem["errors"][0]["allowed"]
        assert allowed == QUOTA
        assert 3000 < used <= QUOTA
        assert f"{used} bytes used of {QUOTA} allowed" in problem["detail"]
        assert dataset_dirs(quota_server) - before == {first.json()["id"]}
        # Inline data counts too.
        inline = {"X": [[float(i), float(i % 3)] for i in range(200)], "n_clusters": 2}
        assert http.post("/v1/benchmarks", json=inline, headers=A).status_code == 403
        # Another tenant has its own quota.
        assert upload(http, B, csv(120, shift=1.0)).status_code == 201

        assert http.delete(f"/v1/datasets/{first.json()['id']}", headers=A).status_code == 204
        assert upload(http, A, csv(120, shift=1.0)).status_code == 201


def test_rate_limit_answers_429_with_its_headers(quota_server: ServiceProcess) -> None:
    # Check that past 20 requests a minute a tenant gets 429 with Retry-After and the
    # RateLimit-* headers, which every answer before carried too; others are not slowed.
    with httpx.Client(base_url=quota_server.url, timeout=60) as http:
        carol = keys_cli(quota_server, "create", "carol").stdout.strip()
        headers = {"X-API-Key": carol}
        remaining = []
        for _ in range(20):
            answer = http.get("/v1/datasets", headers=headers)
            assert answer.status_code == 200
            assert answer.headers["ratelimit-limit"] == "20"
            remaining.append(int(answer.headers["ratelimit-remaining"]))
        assert remaining == list(range(19, -1, -1))
        refused = http.get("/v1/datasets", headers=headers)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["ratelimit-remaining"] == "0"
        assert 0 <= int(refused.headers["ratelimit-reset"]) <= 60
        assert http.get("/healthz").status_code == 200
        assert http.get("/v1/datasets", headers=B).status_code == 200


def test_datasets_unused_past_their_ttl_expire(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Check that an upload unused for CLUSTERBENCH_DATASET_TTL_S goes, with the benchmarks
    # and models made from it, and its bytes once nobody holds them.
    server = start_tenants_server(tmp_path_factory, "ttl", CLUSTERBENCH_DATASET_TTL_S="2")
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            dataset_id = upload(http, A, csv(20)).json()["id"]
            run = http.post(
                "/v1/benchmarks", json={"dataset": dataset_id, "strategies": ["random"]}, headers=A
            ).json()
            model_id = run["results"][0]["model_id"]
            assert http.get(f"/v1/benchmarks/{run['id']}", headers=A).status_code == 200

            def listed() -> set[str]:
                answer: dict[str, Any] = http.get("/v1/datasets", headers=A).json()
                return {d["id"] for d in answer["datasets"]}

            deadline = time.monotonic() + 20
            while dataset_id in listed():
                assert time.monotonic() < deadline, "the dataset did not expire"
                time.sleep(0.1)
            assert http.get(f"/v1/datasets/{dataset_id}", headers=A).status_code == 404
            assert http.get(f"/v1/benchmarks/{run['id']}", headers=A).status_code == 404
            assert http.get(f"/v1/models/{model_id}", headers=A).status_code == 404
            assert dataset_id not in dataset_dirs(server)
    finally:
        server.stop()


def test_without_keys_the_service_is_open(server: ServiceProcess, tmp_path: Path) -> None:
    # Check that with no key configured every route answers without one, as before.
    with httpx.Client(base_url=server.url, timeout=60) as http:
        made = upload(http, {}, csv(10, shift=7.0))
        assert made.status_code == 201
        assert made.json()["id"] in {d["id"] for d in http.get("/v1/datasets").json()["datasets"]}
        assert "ratelimit-limit" not in made.headers
        assert http.delete(f"/v1/datasets/{made.json()['id']}").status_code == 204


def test_jobs_are_their_askers_own(http: httpx.Client) -> None:
    # Check that a job is seen, followed, listed and cancelled only by the tenant that
    # asked for it, and that its result is that tenant's once it has succeeded.
    made = upload(http, A, csv(60, shift=0.25))
    assert made.status_code == 201, made.text
    asked = http.post(
        "/v1/benchmarks",
        json={"dataset": made.json()["id"], "strategies": ["k-means++", "random"]},
        headers={**A, "Prefer": "respond-async"},
    )
    assert asked.status_code == 202, asked.text
    job_url = asked.headers["location"]
    job_id = asked.json()["id"]
    for method, path in (
        ("GET", job_url),
        ("GET", f"{job_url}/events"),
        ("DELETE", job_url),
    ):
        assert http.request(method, path, headers=B).status_code == 404, (method, path)
    assert job_id not in [j["id"] for j in http.get("/v1/jobs", headers=B).json()["jobs"]]
    assert job_id in [j["id"] for j in http.get("/v1/jobs", headers=A).json()["jobs"]]
    deadline = time.monotonic() + 60
    while (job := http.get(job_url, headers=A).json())["state"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    assert job["state"] == "succeeded", job
    result = http.get(job["result_url"], headers=A)
    assert result.status_code == 200, result.text
    model_id = result.json()["results"][0]["model_id"]
    assert http.get(f"/v1/models/{model_id}", headers=A).status_code == 200
    assert http.get(job["result_url"], headers=B).status_code == 404
    assert http.get(f"/v1/models/{model_id}", headers=B).status_code == 404


def test_a_tenant_cancelling_a_shared_job_withdraws_only_itself(http: httpx.Client) -> None:
    # Check that when B joins the job A asked for (the same question), B's DELETE cancels
    # it for B alone: B no longer sees it, and it goes on to succeed for A.
    body = {"dataset": "digits", "strategies": [{"init": "random", "n_init": 300}]}
    asked = http.post("/v1/benchmarks", json=body, headers={**A, "Prefer": "respond-async"})
    assert asked.status_code == 202, asked.text
    joined = http.post("/v1/benchmarks", json=body, headers={**B, "Prefer": "respond-async"})
    assert joined.status_code == 202, joined.text
    assert joined.json()["id"] == asked.json()["id"]
    job_url = asked.headers["location"]
    left = http.delete(job_url, headers=B)
    assert left.status_code == 200, left.text
    assert left.json()["state"] == "cancelled"
    assert "other tenants" in left.json()["error"]["detail"]
    assert http.get(job_url, headers=B).status_code == 404
    assert http.delete(job_url, headers=B).status_code == 404
    deadline = time.monotonic() + 120
    while (job := http.get(job_url, headers=A).json())["state"] not in FINISHED:
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    assert job["state"] == "succeeded", job
    assert http.get(job["result_url"], headers=A).status_code == 200


def test_benchmarks_are_listed_deleted_and_reported_only_for_their_tenant(
    http: httpx.Client,
) -> None:
    # Check that B cannot list, delete or report A's benchmark, that A can, and that a
    # benchmark both hold survives A's delete until B's (the last) removes it.
    made = upload(http, A, csv(40, shift=50.0))
    assert made.status_code == 201, made.text
    run = http.post(
        "/v1/benchmarks", json={"dataset": made.json()["id"], "strategies": ["random"]}, headers=A
    )
    assert run.status_code == 200, run.text
    benchmark_id = run.json()["id"]
    url = f"/v1/benchmarks/{benchmark_id}"

    def listed(headers: dict[str, str]) -> list[str]:
        page = http.get("/v1/benchmarks", params={"limit": 100}, headers=headers)
        assert page.status_code == 200, page.text
        return [b["id"] for b in page.json()["benchmarks"]]

    assert benchmark_id not in listed(B)
    assert http.get(f"{url}/report", headers=B).status_code == 404
    assert http.delete(url, headers=B).status_code == 404
    assert listed(A)[0] == benchmark_id
    assert http.get(f"{url}/report", headers=A).status_code == 200
    assert http.get(url, headers=A).status_code == 200  # B's delete left it alone

    # Benchmarks share equal models: deleting one keeps the model of the other A holds.
    both = http.post(
        "/v1/benchmarks",
        json={"dataset": made.json()["id"], "strategies": ["random", "k-means++"]},
        headers=A,
    ).json()
    model_url = f"/v1/models/{run.json()['results'][0]['model_id']}"
    assert both["results"][0]["model_id"] == run.json()["results"][0]["model_id"]
    assert http.delete(url, headers=A).status_code == 204  # the model's first holder
    assert http.get(url, headers=A).status_code == 404
    assert http.get(model_url, headers=A).status_code == 200
    assert http.get(model_url, headers=B).status_code == 404

    X = [[0.0, 0.2], [0.3, 0.1], [0.1, 0.3], [7.0, 7.1], [7.2, 6.9], [6.9, 7.0], [7.1, 7.3]]
    inline = {"X": X, "n_clusters": 2, "strategies": ["random"], "random_state": 11}
    shared = http.post("/v1/benchmarks", json=inline, headers=A).json()["id"]
    assert http.post("/v1/benchmarks", json=inline, headers=B).status_code == 200
    shared_url = f"/v1/benchmarks/{shared}"
    assert http.delete(shared_url, headers=A).status_code == 204
    assert shared not in listed(A)
    assert http.get(shared_url, headers=A).status_code == 404
    assert http.get(shared_url, headers=B).status_code == 200
    assert http.delete(shared_url, headers=B).status_code == 204
    assert http.get(shared_url, headers=B).status_code == 404
    # The last hold gone, the stored result went too: asking again computes it.
    assert http.post("/v1/benchmarks", json=inline, headers=A).headers["x-cache"] == "miss"
    both_url = f"/v1/benchmarks/{both['id']}"
    assert http.delete(both_url, headers=A).status_code == 204
    assert http.get(f"{both_url}/report", headers=A).status_code == 404
    assert http.get(model_url, headers=A).status_code == 404


def test_a_tenants_data_is_readable_by_the_service_only(
    http: httpx.Client, tenants_server: ServiceProcess
) -> None:
    # Check that an upload's folder and files carry no permission for other local users
    # (they were 0644: any account on the machine could read every tenant's data).
    made = upload(http, A, csv(30, shift=3.0))
    assert made.status_code == 201, made.text
    folder = tenants_server.data_dir / "datasets" / made.json()["id"]
    for path in (folder, *folder.iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_if_none_match_any_on_a_post_names_only_a_stored_answer(http: httpx.Client) -> None:
    # Check that `If-None-Match: *` on a POST whose question was never answered computes
    # it (200) rather than answering 304, and is a 304 once the answer is stored.
    any_etag = {**A, "If-None-Match": "*"}
    for url, body in (
        ("/v1/benchmarks", {"dataset": "iris", "random_state": 4242, "strategies": ["random"]}),
        ("/v1/sweeps", {"dataset": "iris", "random_state": 4242, "k": [2, 3]}),
    ):
        first = http.post(url, json=body, headers=any_etag)
        assert first.status_code == 200, first.text
        assert first.json()["id"]
        again = http.post(url, json=body, headers=any_etag)
        assert again.status_code == 304


def test_one_tenants_flood_of_jobs_does_not_starve_another(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Check that a tenant flooding the server with async benchmarks gets its share of
    # jobs (then 429 with Retry-After) and of the pool, while another tenant's
    # synchronous benchmark still answers 200 and its job starts in its turn (measured
    # before: 99 x 202 filled CLUSTERBENCH_MAX_JOBS and the pool, and every other
    # tenant got 503 until those jobs ended).
    server = start_tenants_server(tmp_path_factory, "flood")
    try:
        flood = [{"dataset": "digits", "random_state": 1000 + i} for i in range(130)]

        async def send_flood() -> list[httpx.Response]:
            # Fewer connections than one address may hold (CLUSTERBENCH_MAX_CLIENT_CONNECTIONS):
            # the flood is of jobs, not of connections.
            limits = httpx.Limits(max_connections=32)
            async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            "/v1/benchmarks",
                            json=body,
                            headers={**A, "Prefer": "respond-async"},
                        )
                        for body in flood
                    )
                )

        with httpx.Client(base_url=server.url, timeout=120) as http:
            warm = http.post("/v1/benchmarks", json={"random_state": 6}, headers=B)
            assert warm.status_code == 200, warm.text
            began = time.monotonic()
            alone = http.post("/v1/benchmarks", json={"random_state": 7}, headers=B)
            assert alone.status_code == 200, alone.text
            print(f"bob's benchmark alone: {time.monotonic() - began:.2f} s")

            answers = asyncio.run(send_flood())
            began = time.monotonic()
            answer = http.post("/v1/benchmarks", json={}, headers=B)
            assert answer.status_code == 200, answer.text
            print(f"bob's benchmark under the flood: {time.monotonic() - began:.2f} s")

            statuses = [a.status_code for a in answers]
            assert set(statuses) == {202, 429}, statuses
            assert statuses.count(202) >= 20  # CLUSTERBENCH_TENANT_MAX_JOBS, by default
            refused = answers[statuses.index(429)]
            assert refused.json()["type"] == "urn:clusterbench:problem:tenant-busy"
            assert "CLUSTERBENCH_TENANT_MAX_JOBS" in refused.json()["detail"]
            assert int(refused.headers["retry-after"]) >= 1
            a_jobs = [a.json()["id"] for a in answers if a.status_code == 202]

            job = http.post(
                "/v1/benchmarks",
                json={"dataset": "iris"},
                headers={**B, "Prefer": "respond-async"},
            )
            assert job.status_code == 202, job.text
            url = job.headers["location"]
            deadline = time.monotonic() + 120
            while (state := http.get(url, headers=B).json()["state"]) not in FINISHED:
                assert time.monotonic() < deadline, state
                time.sleep(0.1)
            assert state == "succeeded"
            # Its turn came before alice's queue was through: jobs start tenant by tenant.
            a_states = [http.get(f"/v1/jobs/{j}", headers=A).json()["state"] for j in a_jobs]
            assert "queued" in a_states, a_states
    finally:
        server.stop()


def test_a_tenant_holds_at_most_its_share_of_the_pool(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Check that one tenant's synchronous computations at once hold at most half the
    # pool's places (1 worker + 4 queued: 2), the others getting 429 with Retry-After,
    # while another tenant is still admitted beside them.
    server = start_tenants_server(tmp_path_factory, "share")
    try:
        heavy = [
            {"strategies": [{"init": "k-means++", "n_init": 40}], "random_state": i}
            for i in range(5)
        ]

        async def send(bodies: list[dict[str, Any]]) -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
                mine = [client.post("/v1/benchmarks", json=body, headers=A) for body in bodies]
                other = client.post("/v1/benchmarks", json={"dataset": "iris"}, headers=B)
                return await asyncio.gather(*mine, other)

        *answers, other = asyncio.run(send(heavy))
        statuses = [a.status_code for a in answers]
        assert set(statuses) == {200, 429}, statuses
        assert statuses.count(200) >= 2
        refused = answers[statuses.index(429)]
        assert refused.json()["type"] == "urn:clusterbench:problem:tenant-busy"
        assert "CLUSTERBENCH_TENANT_POOL_SHARE" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1
        assert other.status_code == 200, other.text
    finally:
        server.stop()


def test_keys_list_says_when_there_are_no_keys(tmp_path: Path) -> None:
    # Check that `keys list` on a data directory without keys says the service is open
    # (it printed nothing, as if the command had failed), and lists keys from the
    # environment when those are the only ones.
    env = {**os.environ, "CLUSTERBENCH_DATA_DIR": str(tmp_path / "data")}
    env.pop("CLUSTERBENCH_API_KEYS", None)
    command = [sys.executable, "-m", "service", "keys", "list"]
    empty = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert empty.returncode == 0
    assert empty.stdout == ""
    assert "no keys in" in empty.stderr
    assert "the service is open" in empty.stderr
    env["CLUSTERBENCH_API_KEYS"] = "dora:dora-key-0003-not-a-secret"
    listed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert listed.stdout == "dora\tenvironment\t-\n"
    assert listed.stderr == ""
