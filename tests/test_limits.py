"""What a hostile or broken client can hold of the server: headers, slow requests,
bodies, predictions and scratch files are all bounded (against a real uvicorn process)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import psutil
import pytest
from numpy.testing import assert_array_equal

from service.benchmark import PREDICT_BLOCK_BYTES, FittedModel
from service.process import ServiceProcess
from tests.conftest import make_settings, serve
from tests.helpers import read_all, status_and_body, traced_peak

pytestmark = pytest.mark.server

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def strict_server(make_server: Callable[..., ServiceProcess]) -> ServiceProcess:
    """A real server with short read deadlines and a small header bound."""
    return make_server(
        "limits",
        CLUSTERBENCH_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        CLUSTERBENCH_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
        CLUSTERBENCH_MAX_HEADER_BYTES="16384",
        CLUSTERBENCH_WORKERS="1",
    )


def _connect(server: ServiceProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=15)


def test_oversized_headers_get_431_without_echo(strict_server: ServiceProcess) -> None:
    # Check that headers past CLUSTERBENCH_MAX_HEADER_BYTES are refused with 431 as they
    # arrive (not buffered whole), and that nothing of them is echoed back.
    with _connect(strict_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(64):  # up to 4 MiB, far past the bound
                sock.sendall(b"A" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_all(sock)
    status, problem = status_and_body(answer)
    assert status == 431
    assert "16384" in str(problem["detail"])
    assert b"AAAA" not in answer


def test_an_unacceptable_huge_accept_is_not_echoed(strict_server: ServiceProcess) -> None:
    # Check that a 406 quotes at most a short part of the Accept header it refuses.
    accept = "application/x-nothing;" + "q=1;" * 3000
    response = httpx.get(
        f"{strict_server.url}/v1/benchmarks/{'0' * 64}", headers={"accept": accept}
    )
    assert response.status_code == 406
    assert len(response.content) < 1000


def test_slow_headers_get_408(strict_server: ServiceProcess) -> None:
    # Check that a client that sends half a request line and stops gets 408 and is
    # disconnected after CLUSTERBENCH_HEADER_TIMEOUT_S, and so does one that sends nothing.
    with _connect(strict_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        status, problem = status_and_body(read_all(sock))
    assert status == 408
    assert "headers" in str(problem["detail"])
    with _connect(strict_server) as idle:
        status, _ = status_and_body(read_all(idle))
    assert status == 408


def test_a_stalled_body_gets_408_and_leaves_no_scratch_file(
    strict_server: ServiceProcess,
) -> None:
    # Check that a body that stops arriving gets 408 after CLUSTERBENCH_BODY_TIMEOUT_S,
    # the connection closes, and the scratch file it was written to is removed.
    start = b'{"X": [' + b"[1.0, 2.0], " * 200_000  # > 1 MiB: spilled to a scratch file
    with _connect(strict_server) as sock:
        sock.sendall(
            b"POST /v1/benchmarks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(start) * 2}\r\n\r\n".encode()
            + start
        )
        status, problem = status_and_body(read_all(sock))
    assert status == 408
    assert "body" in str(problem["detail"])
    scratch = strict_server.data_dir / "tmp"
    deadline = time.monotonic() + 10
    while any(scratch.glob("body-*")):
        assert time.monotonic() < deadline, list(scratch.iterdir())
        time.sleep(0.05)
    assert httpx.get(f"{strict_server.url}/healthz").status_code == 200


def post_at_once(
    server: ServiceProcess, bodies: list[tuple[str, bytes]]
) -> tuple[list[httpx.Response], int]:
    """POST each ``(path, JSON body)`` to ``server`` at once: the answers, in order, and
    how much the server process grew meanwhile at its peak, in bytes."""
    assert server.process is not None
    process = psutil.Process(server.process.pid)
    baseline = process.memory_info().rss
    peak = baseline
    answers: dict[int, httpx.Response] = {}

    def post(index: int, path: str, body: bytes) -> None:
        answers[index] = httpx.post(
            f"{server.url}{path}",
            content=body,
            headers={"content-type": "application/json"},
            timeout=120,
        )

    posts = [
        threading.Thread(target=post, args=(i, path, body)) for i, (path, body) in enumerate(bodies)
    ]
    for thread in posts:
        thread.start()
    while any(thread.is_alive() for thread in posts):
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.01)
    return [answers[i] for i in range(len(bodies))], peak - baseline


def test_large_bodies_are_not_held_in_the_server(tmp_path: Path) -> None:
    # Check that several large JSON bodies at once do not grow the server process by
    # their size: they are written to scratch files as they arrive (measured before:
    # six 200 MB bodies held 2.4 GB).
    X = np.random.default_rng(0).normal(size=(150_000, 16)).round(3)
    body = orjson.dumps({"X": X.tolist(), "n_clusters": 1})  # refused after decoding
    assert len(body) > 15_000_000
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with ServiceProcess(data_dir, CLUSTERBENCH_WORKERS="1") as server:
        answers, grown = post_at_once(server, [("/v1/benchmarks", body)] * 3)
    assert [answer.status_code for answer in answers] == [422] * 3
    # Three bodies are 3 x len(body) bytes; the server may grow by a fraction of one.
    assert grown < len(body), (grown, len(body))


def test_millions_of_centre_rows_never_reach_the_server(tmp_path: Path) -> None:
    # Check that a benchmark and a stability body carrying far more custom-centre rows
    # than n_clusters are refused (422) by the worker that decodes them, without the
    # rows travelling back to the server process (measured before: two such bodies took
    # it from 331 to 3,429 MiB, and /healthz timed out).
    centers = np.random.default_rng(0).normal(size=(1_500_000, 4)).round(3).tolist()
    custom = {"init": "custom", "centers": centers}
    bodies = [
        ("/v1/benchmarks", orjson.dumps({"dataset": "iris", "strategies": [custom]})),
        ("/v1/stability", orjson.dumps({"dataset": "iris", "strategies": [custom], "seeds": 2})),
    ]
    del centers, custom
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with ServiceProcess(data_dir, CLUSTERBENCH_WORKERS="1") as server:
        answers, grown = post_at_once(server, bodies)
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    for (path, _), answer in zip(bodies, answers, strict=True):
        assert answer.status_code == 422, (path, answer.text[:500])
        assert "expected 3 rows (n_clusters), got 1500000" in answer.json()["detail"]
    # The rows as Python lists are ~10 times their JSON; the server may grow by a
    # fraction of one body (measured before: 758 MB).
    assert grown < len(bodies[0][1]), grown


def test_prediction_holds_a_bounded_block() -> None:
    # Check that predicting many samples against many centres holds one row block of
    # distances at a time (whole, 50,000 x 2,000 distances are 800 MB), with the labels
    # and distances of the whole computation.
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(2000, 2))
    model = FittedModel(
        init="random",
        n_clusters=2000,
        n_features=2,
        cluster_centers=centers,
        scaler_mean=None,
        scaler_scale=None,
        inertia=0.0,
        n_iter=1,
    )
    X = rng.normal(size=(50_000, 2))
    (labels, distances), peak = traced_peak(lambda: model.predict(X))
    assert peak < 4 * PREDICT_BLOCK_BYTES + 10 * X.nbytes, peak
    squared = ((X[:2000, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
    assert_array_equal(labels[:2000], squared.argmin(axis=1))
    np.testing.assert_allclose(distances[:2000], np.sqrt(squared.min(axis=1)), rtol=1e-12)


@pytest.mark.anyio
async def test_a_prediction_past_the_bound_is_413(tmp_path: Path) -> None:
    # Check that samples x clusters past CLUSTERBENCH_PREDICT_MAX_DISTANCES is refused,
    # naming the bound and the setting.
    settings = make_settings(tmp_path, predict_max_distances=300)
    async with serve(settings) as client:
        answer = (await client.post("/v1/benchmarks", json={"dataset": "iris"})).json()
        model_id = answer["results"][0]["model_id"]
        within = await client.post(
            f"/v1/models/{model_id}/predict", json={"X": [[5.0, 3.4, 1.5, 0.2]] * 100}
        )
        assert within.status_code == 200
        past = await client.post(
            f"/v1/models/{model_id}/predict", json={"X": [[5.0, 3.4, 1.5, 0.2]] * 101}
        )
        assert past.status_code == 413
        assert past.headers["content-type"] == "application/problem+json"
        assert "CLUSTERBENCH_PREDICT_MAX_DISTANCES" in past.json()["detail"]


@pytest.mark.anyio
async def test_a_stability_run_past_the_bound_is_413(tmp_path: Path) -> None:
    # Check that seeds x n_samples past CLUSTERBENCH_STABILITY_MAX_LABELS is refused
    # before any fit, naming seeds x n_samples and the setting (the labels every seed
    # keeps for the pairwise ARI grew without bound: 4.5 GB at 20M samples x 100 seeds).
    settings = make_settings(tmp_path, stability_max_labels=300)
    async with serve(settings) as client:
        body = {"dataset": "iris", "strategies": ["random"]}
        within = await client.post("/v1/stability", json={**body, "seeds": 2})
        assert within.status_code == 200, within.text
        past = await client.post("/v1/stability", json={**body, "seeds": 3})
        assert past.status_code == 413
        assert past.headers["content-type"] == "application/problem+json"
        problem = past.json()
        assert "3 seeds x 150 samples is 450 labels" in problem["detail"]
        assert "CLUSTERBENCH_STABILITY_MAX_LABELS" in problem["detail"]
        assert problem["errors"] == [{"loc": ["seeds"], "msg": "at most 2 seeds"}]
        job = await client.post(
            "/v1/stability", json={**body, "seeds": 3}, headers={"prefer": "respond-async"}
        )
        assert job.status_code == 413


@pytest.mark.anyio
async def test_scratch_files_of_stopped_processes_are_removed_at_start(tmp_path: Path) -> None:
    # Check that scratch files left by a crashed process are removed when the service
    # starts, and that those of a process still running (another replica) are kept.
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(gone.stdout)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    orphan = scratch / f"upload-{dead_pid}-{'a' * 32}"
    legacy = scratch / f"body-{'b' * 32}"
    alive = scratch / f"body-{psutil.Process().ppid()}-{'c' * 32}"
    for path in (orphan, legacy, alive):
        path.write_bytes(b"x" * 100)
    async with serve(make_settings(tmp_path)) as client:
        assert (await client.get("/healthz")).status_code == 200
    assert not orphan.exists()
    assert not legacy.exists()
    assert alive.exists()


def test_a_large_bodys_worker_tells_nothing_of_stored_datasets(tmp_path: Path) -> None:
    # Check that the worker decoding a large body answers alike for a stored dataset's id
    # and for an id nobody uploaded: it looked the stored one up to check custom centres
    # against its shape, so wrong centres told another tenant's dataset exists (a 422 with
    # its shape) where a random id said "unknown dataset". The API process checks the
    # shape once the caller may use the data.
    from service.datasets import DatasetStore
    from service.errors import InvalidCentersError
    from service.formats import DataLimits
    from service.inline import request_body_in_worker
    from service.schemas import BenchmarkRequest

    root = tmp_path / "datasets"
    stored, _ = DatasetStore(root).put(np.eye(6), None, name="secret", format="csv")
    body = tmp_path / "body.json"
    for dataset_id in (stored.id, "f" * 64):
        custom = {"init": "custom", "centers": [[1.0, 2.0]] * 3}  # the wrong width for eye(6)
        body.write_bytes(
            orjson.dumps({"dataset": dataset_id, "n_clusters": 3, "strategies": [custom]})
        )
        request, info = request_body_in_worker(BenchmarkRequest, body, root, DataLimits())
        assert (request.dataset, info) == (dataset_id, None)
        # Rows past n_clusters are refused here all the same, before they travel back.
        custom["centers"] = [[1.0, 2.0]] * 4
        body.write_bytes(
            orjson.dumps({"dataset": dataset_id, "n_clusters": 3, "strategies": [custom]})
        )
        with pytest.raises(InvalidCentersError, match="expected 3 rows"):
            request_body_in_worker(BenchmarkRequest, body, root, DataLimits())


@pytest.mark.anyio
async def test_a_small_body_is_read_without_a_scratch_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Check that a small JSON body (every cache hit's) is read in memory with no scratch
    # file made for it (a mkdir, a random name and an unlink each: a quarter of a cache
    # hit's time in-process), and that a body past SMALL_BODY_BYTES still spills to one,
    # removed once answered.
    from service.api.body import SMALL_BODY_BYTES
    from service.runtime import Runtime

    made: list[str] = []
    scratch_file = Runtime.scratch_file

    def counted(self: Runtime, prefix: str) -> Any:
        made.append(prefix)
        return scratch_file(self, prefix)

    monkeypatch.setattr(Runtime, "scratch_file", counted)
    async with serve(make_settings(tmp_path)) as client:
        for _ in range(2):  # computed, then a cache hit
            answer = await client.post("/v1/benchmarks", json={"dataset": "iris", "n_clusters": 3})
            assert answer.status_code == 200
        assert made == []
        rows = [[1.0, 2.0]] * (SMALL_BODY_BYTES // 10) + [[1.0]]  # ragged: refused once read
        refused = await client.post("/v1/benchmarks", json={"X": rows})
        assert refused.status_code == 422
        assert made == ["body"]
    assert not any((tmp_path / "tmp").glob("body-*"))
