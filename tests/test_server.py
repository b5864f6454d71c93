"""End to end: real uvicorn processes on loopback ports, reached as users reach them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service.process import ServiceProcess

pytestmark = pytest.mark.server

LONG = {"strategies": [{"init": "random", "n_init": 600}], "tol": 0.0, "random_state": 9}


def test_python_m_service_serves_the_seed(server: ServiceProcess) -> None:
    # Check the seed's benchmark over real HTTP, then a hit with the same body.
    first = httpx.post(f"{server.url}/v1/benchmarks", json={}, timeout=60)
    assert first.status_code == 200
    assert [round(r["inertia"]) for r in first.json()["results"]] == [69545, 69735, 69513]
    second = httpx.post(f"{server.url}/v1/benchmarks", json={}, timeout=60)
    assert second.headers["x-cache"] == "hit"
    assert second.json() == {**first.json(), "cached": True}
    assert (server.data_dir / "datasets" / first.json()["dataset"]["id"] / "X.npy").exists()


def test_healthz_is_instant_during_a_long_benchmark(server: ServiceProcess) -> None:
    # Check that while a worker computes for seconds, /healthz still answers at once.
    result: dict[str, httpx.Response] = {}
    worker = threading.Thread(
        target=lambda: result.update(
            r=httpx.post(f"{server.url}/v1/benchmarks", json=LONG, timeout=120)
        )
    )
    worker.start()
    time.sleep(0.5)
    assert worker.is_alive(), "the long benchmark finished too soon to prove anything"
    latencies = []
    with httpx.Client(base_url=server.url) as client:
        for _ in range(20):
            t0 = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - t0)
    assert worker.is_alive()
    worker.join()
    assert result["r"].status_code == 200
    assert max(latencies) < 0.5


@pytest.fixture(scope="module")
def uvicorn_server(make_server: Callable[..., ServiceProcess]) -> ServiceProcess:
    """`uvicorn service.main:app`, with a small body limit from the environment."""
    return make_server(
        "uvicorn",
        args=["-m", "uvicorn", "service.main:app", "--port", "{port}"],
        CLUSTERBENCH_MAX_BODY_BYTES="2000",
        CLUSTERBENCH_WORKERS="1",
    )


def test_uvicorn_app_reads_settings(uvicorn_server: ServiceProcess) -> None:
    # Check that `uvicorn service.main:app` serves with CLUSTERBENCH_* settings applied.
    response = httpx.post(
        f"{uvicorn_server.url}/v1/benchmarks", json={"dataset": "iris"}, timeout=60
    )
    assert response.status_code == 200
    assert Path(uvicorn_server.data_dir / "datasets").is_dir()


def test_body_over_the_limit_is_413(uvicorn_server: ServiceProcess) -> None:
    # Check that a body over CLUSTERBENCH_MAX_BODY_BYTES is refused with 413, whether its
    # length is declared or it streams in chunks, and the server stays healthy.
    big = {"X": [[float(i), float(i) + 0.5] for i in range(500)], "n_clusters": 2}
    declared = httpx.post(f"{uvicorn_server.url}/v1/benchmarks", json=big, timeout=30)
    assert declared.status_code == 413
    assert declared.headers["content-type"] == "application/problem+json"
    assert "2000 bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield b'{"X": ['
        for i in range(500):
            yield f"[{i}, {i}.5],".encode()
        yield b'[0, 0]], "n_clusters": 2}'

    streamed = httpx.post(
        f"{uvicorn_server.url}/v1/benchmarks",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert streamed.status_code == 413
    assert streamed.headers["content-type"] == "application/problem+json"
    assert httpx.get(f"{uvicorn_server.url}/healthz").status_code == 200

    csv = b"a,b\n" + b"".join(f"{i},{i}.5\n".encode() for i in range(500))
    raw = httpx.post(
        f"{uvicorn_server.url}/v1/datasets",
        content=csv,
        headers={"content-type": "text/csv"},
        timeout=30,
    )
    assert raw.status_code == 413
    form = httpx.post(
        f"{uvicorn_server.url}/v1/datasets", files={"file": ("big.csv", csv)}, timeout=30
    )
    assert form.status_code == 413
    assert form.headers["content-type"] == "application/problem+json"
    streamed_upload = httpx.post(
        f"{uvicorn_server.url}/v1/datasets",
        content=(csv[i : i + 100] for i in range(0, len(csv), 100)),
        headers={"content-type": "text/csv"},
        timeout=30,
    )
    assert streamed_upload.status_code == 413
    assert not list((uvicorn_server.data_dir / "tmp").glob("upload-*"))
    assert httpx.get(f"{uvicorn_server.url}/readyz").status_code == 200
    small = httpx.post(
        f"{uvicorn_server.url}/v1/benchmarks",
        json={"X": [[0, 1], [1, 0], [5, 5], [6, 5]], "n_clusters": 2},
        timeout=30,
    )
    assert small.status_code == 200


def test_large_inline_body_keeps_the_server_responsive(tmp_path: Path) -> None:
    # Check that a large inline JSON body (decoded by a worker, not on the event loop)
    # as a fresh server's first request leaves /healthz answering at once, gives the
    # same numbers as scikit-learn, and that a bad cell deep inside is named.
    import numpy as np
    import orjson

    from service.api.body import SMALL_BODY_BYTES
    from tests.reference import assert_matches, seed_scores

    X = np.random.default_rng(3).normal(size=(40_000, 16)).round(4)
    body = orjson.dumps({"X": X.tolist(), "n_clusters": 3, "strategies": ["random"]})
    assert len(body) > SMALL_BODY_BYTES
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with ServiceProcess(data_dir) as fresh:
        result: dict[str, httpx.Response] = {}
        post = threading.Thread(
            target=lambda: result.update(
                r=httpx.post(
                    f"{fresh.url}/v1/benchmarks",
                    content=body,
                    headers={"content-type": "application/json"},
                    timeout=120,
                )
            )
        )
        latencies = []
        with httpx.Client(base_url=fresh.url) as client:
            post.start()
            while post.is_alive():
                t0 = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.01)
        post.join()
        assert result["r"].status_code == 200, result["r"].text
        assert max(latencies) < 0.5
        (answer,) = result["r"].json()["results"]
        assert_matches(answer, seed_scores(X, None, "random", n_clusters=3))

        bad = bytearray(body)
        cut = body.rindex(b",", 0, len(body) - 100)
        bad[cut + 1 : cut + 2] = b'"'  # an unterminated string deep inside: malformed
        broken = httpx.post(
            f"{fresh.url}/v1/benchmarks",
            content=bytes(bad),
            headers={"content-type": "application/json"},
            timeout=120,
        )
        assert broken.status_code == 400
        assert "not valid JSON" in broken.json()["detail"]
        rows = X.tolist()
        rows[39_999][7] = "oops"
        named = httpx.post(
            f"{fresh.url}/v1/benchmarks",
            content=orjson.dumps({"X": rows, "n_clusters": 3}),
            headers={"content-type": "application/json"},
            timeout=120,
        )
        assert named.status_code == 422
        assert "X[39999][7] is not a number" in named.json()["detail"]
        assert not list((data_dir / "tmp").glob("body-*"))
