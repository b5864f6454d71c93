"""The cache on disk, seen from real server processes: restarts, damage, several workers."""

from __future__ import annotations

import select
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx
import pytest

from service.process import ServiceProcess
from service.store import ResultStore

pytestmark = pytest.mark.server

REQUEST = {"dataset": "wine", "strategies": ["k-means++", "pca"], "random_state": 21}


def test_restart_keeps_results_models_and_plots(tmp_path: Path) -> None:
    # Check that after a restart the same request is a hit with the same body, and the
    # plot and models are the same bytes.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = ServiceProcess(data_dir)
    server.start()
    try:
        first = httpx.post(f"{server.url}/v1/benchmarks", json=REQUEST, timeout=60)
        assert first.headers["x-cache"] == "miss"
        body = first.json()
        plot = httpx.get(f"{server.url}{body['plot_url']}", timeout=60).content
        models = [
            httpx.get(f"{server.url}/v1/models/{r['model_id']}").json() for r in body["results"]
        ]
    finally:
        server.stop()

    again = ServiceProcess(data_dir)
    again.start()
    try:
        second = httpx.post(f"{again.url}/v1/benchmarks", json=REQUEST, timeout=60)
        assert second.headers["x-cache"] == "hit"
        assert second.json() == {**body, "cached": True}
        assert httpx.get(f"{again.url}/v1/benchmarks/{body['id']}").json()["id"] == body["id"]
        assert httpx.get(f"{again.url}{body['plot_url']}", timeout=60).content == plot
        for result, model in zip(body["results"], models, strict=True):
            assert httpx.get(f"{again.url}/v1/models/{result['model_id']}").json() == model
    finally:
        again.stop()


def test_garbage_database_is_recomputed_not_500(tmp_path: Path) -> None:
    # Check that a database file overwritten with garbage between runs, or truncated
    # under a running server, never gives a 500: the answer is recomputed.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = ServiceProcess(data_dir)
    server.start()
    httpx.post(f"{server.url}/v1/benchmarks", json=REQUEST, timeout=60)
    server.stop()
    database = data_dir / "cache.sqlite3"
    database.write_bytes(b"this is not a database" * 1000)

    server.start()
    try:
        response = httpx.post(f"{server.url}/v1/benchmarks", json=REQUEST, timeout=60)
        assert response.status_code == 200
        assert response.headers["x-cache"] == "miss"
        assert httpx.get(f"{server.url}/readyz").status_code == 200

        with database.open("r+b") as handle:
            handle.truncate(4096)
        other = {**REQUEST, "random_state": 22}
        for _ in range(2):
            response = httpx.post(f"{server.url}/v1/benchmarks", json=other, timeout=60)
            assert response.status_code == 200
        plot = httpx.get(f"{server.url}{response.json()['plot_url']}", timeout=60)
        assert plot.status_code == 200
    finally:
        server.stop()


def test_two_uvicorn_workers_share_the_cache_and_compute_once(tmp_path: Path) -> None:
    # Check that 8 concurrent identical requests spread over two uvicorn worker processes
    # on one data directory all get the one computation's result (same fit times).
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = ServiceProcess(
        data_dir,
        ["-m", "uvicorn", "service.main:app", "--workers", "2", "--port", "{port}"],
        CLUSTERBENCH_WORKERS="1",
    )
    server.start()
    try:
        request = {
            "dataset": "breast_cancer",
            "strategies": [{"init": "random", "n_init": 150}],
            "tol": 0.0,
        }
        responses: list[httpx.Response] = []
        barrier = threading.Barrier(8)

        def call() -> None:
            with httpx.Client() as client:  # a connection of its own: spread over workers
                barrier.wait()
                responses.append(
                    client.post(f"{server.url}/v1/benchmarks", json=request, timeout=120)
                )

        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [r.status_code for r in responses] == [200] * 8
        fit_times = {r.json()["results"][0]["fit_time"] for r in responses}
        assert len(fit_times) == 1
    finally:
        server.stop()


def test_killed_writer_leaves_whole_entries(tmp_path: Path) -> None:
    # Check that a process killed while writing leaves a readable store whose entries are
    # each whole (their checksums hold) or absent.
    path = tmp_path / "cache.sqlite3"
    writer = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import orjson
        from service.store import ResultStore, StoredBenchmark
        from tests.helpers import make_model
        store = ResultStore(Path({str(path)!r}), max_bytes=10**9, memory_bytes=0)
        i = 0
        while True:
            benchmark_id = f"{{i:064x}}"
            body = orjson.dumps({{"id": benchmark_id, "cached": False, "pad": "x" * 50000}})
            models = {{"m" * 63 + str(i % 10): make_model(i)}}
            store.put(StoredBenchmark.from_body(benchmark_id, body, models))
            i += 1
            if i == 8:
                print("written", flush=True)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", writer], cwd=Path(__file__).parent.parent, stdout=subprocess.PIPE
    )
    try:
        # Killed once it has committed entries and is writing more; its imports alone
        # took up to 3.2 s on a loaded machine, so wait for its word, not for a time.
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, "the writer committed nothing within 60 s"
        assert process.stdout.readline() == b"written\n"
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    store = ResultStore(path, max_bytes=10**9, memory_bytes=0)
    assert store.usable()
    ids = list(store._connection().execute("SELECT id FROM benchmarks"))
    assert len(ids) > 5
    for (benchmark_id,) in ids:
        assert store.get(benchmark_id) is not None
    assert store.corrupt_entries == 0
    assert not list(tmp_path.glob("*.corrupt-*"))
