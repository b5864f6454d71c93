"""Lean at rest: the API process serves without scikit-learn, SciPy, matplotlib, pandas,
pyarrow or skl2onnx; the workers load them (README "Performance")."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from service.compute import ComputePool
from service.lazy import WORKER_ONLY
from service.process import ServiceProcess
from tests.conftest import make_settings, serve

pytestmark = pytest.mark.server


def test_create_app_imports_no_worker_package(tmp_path: Path) -> None:
    # Check that importing the service and building its app, as every replica starts,
    # loads none of the packages only the workers use.
    probe = (
        "import sys\n"
        "from service.main import create_app\n"
        "from service.settings import Settings\n"
        f"create_app(Settings(data_dir={str(tmp_path)!r}))\n"
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert set(loaded.split(",")) & set(WORKER_ONLY) == set()


def mapped_packages(process: psutil.Process) -> set[str]:
    """The packages of WORKER_ONLY with a file mapped into ``process``: each maps a
    compiled extension (or pyarrow's libarrow) as it is imported."""
    paths = [m.path for m in process.memory_maps(grouped=True)]
    return {
        p for p in WORKER_ONLY if any(f"/{p}/" in path or f"/{p}.libs/" in path for path in paths)
    }


def test_api_process_serves_without_worker_packages(server: ServiceProcess) -> None:
    # Check that the API process of a real server, having answered a benchmark, its plot
    # and ONNX export, a CSV upload and a sweep, never mapped a file of those packages,
    # while its workers did.
    assert server.process is not None
    with httpx.Client(base_url=server.url, timeout=120) as client:
        benchmark = client.post("/v1/benchmarks", json={"random_state": 4242})
        assert benchmark.status_code == 200, benchmark.text
        body = benchmark.json()
        assert client.get(body["plot_url"]).content.startswith(b"\x89PNG")
        onnx = client.get(f"/v1/models/{body['results'][0]['model_id']}/model.onnx")
        assert onnx.status_code == 200, onnx.text
        rows = np.random.default_rng(0).normal(size=(60, 3))
        csv = "a,b,c\n" + "".join(f"{x:.6f},{y:.6f},{z:.6f}\n" for x, y, z in rows)
        uploaded = client.post(
            "/v1/datasets", content=csv.encode(), headers={"content-type": "text/csv"}
        )
        assert uploaded.status_code in (200, 201), uploaded.text
        sweep = client.post("/v1/sweeps", json={"dataset": uploaded.json()["id"], "k": [2, 3, 4]})
        assert sweep.status_code == 200, sweep.text
        assert set(sweep.json()["recommended_k"]) >= {"elbow", "silhouette"}
    api = psutil.Process(server.process.pid)
    assert mapped_packages(api) == set()
    # The same probe finds them where they are loaded: in the workers.
    workers: set[str] = set()
    for child in api.children(recursive=True):
        workers |= mapped_packages(child)
    # (skl2onnx is pure Python: onnx, which it imports, maps its extension.)
    assert {"sklearn", "scipy", "matplotlib", "pyarrow", "onnx"} <= workers


def has_drawn_a_png() -> bool:
    """In a worker: whether it has drawn a plot. A plot keeps its texts' drawn pixels
    (plot_text.text_layers); the forkserver imports plotting but draws nothing, and
    warm_up draws a plot."""
    plot_text = sys.modules.get("service.plot_text")
    return plot_text is not None and bool(plot_text.text_layers)


@pytest.mark.anyio
async def test_data_lane_workers_skip_the_warm_up() -> None:
    # Check that the compute pool's workers run warm_up's benchmark and plot as they
    # start, and that a pool made with warm=False (the data lane's, which neither fits
    # nor draws) spares its workers that memory.
    warm = ComputePool(workers=1, queue_size=0, timeout_s=120, threads_per_worker=1)
    cold = ComputePool(workers=1, queue_size=0, timeout_s=120, threads_per_worker=1, warm=False)
    try:
        await asyncio.gather(warm.start(), cold.start())
        assert await warm.run(has_drawn_a_png) is True
        assert await cold.run(has_drawn_a_png) is False
    finally:
        warm.close()
        cold.close()


@pytest.mark.anyio
async def test_a_builtin_named_by_a_burst_is_stored_once(tmp_path: Path) -> None:
    # Check that concurrent first requests naming a built-in dataset each get their
    # answer: its copy is written by one data-lane task (the lane here takes one task
    # and queues none), not one task each, which would be refused as busy.
    settings = make_settings(tmp_path, data_workers=1, data_queue_size=0)
    async with serve(settings) as client:
        answers = await asyncio.gather(
            *(
                client.post("/v1/benchmarks", json={"dataset": "iris", "random_state": seed})
                for seed in range(4)
            )
        )
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert len({a.json()["dataset"]["id"] for a in answers}) == 1
