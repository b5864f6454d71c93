"""What several test modules share: real servers, jobs, tenants, raw HTTP, pages, stores.

A test module imports these from here, never from another test module.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import orjson
import psutil
import pytest

from service.benchmark import FittedModel
from service.process import ServiceProcess
from service.report import CONTENT_SECURITY_POLICY
from service.store import StoredBenchmark

T = TypeVar("T")

# -- Real servers -----------------------------------------------------------------------


def traced_peak(fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()`` and the most bytes Python's allocators held at once while it ran, above
    what they held when it began (tracemalloc)."""
    tracemalloc.start()
    try:
        return fn(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def start_server(
    tmp_path_factory: pytest.TempPathFactory, name: str, *, digits: bool = False, **options: Any
) -> ServiceProcess:
    """A real server (:class:`ServiceProcess`; ``options`` are its settings and arguments)
    on a new data directory under ``name``; with ``digits``, the built-in digits stored
    first, so that jobs start computing at once."""
    instance = ServiceProcess(tmp_path_factory.mktemp(name) / "data", **options)
    instance.data_dir.mkdir(parents=True)
    instance.start()
    if digits:
        httpx.post(f"{instance.url}/v1/benchmarks", json={"strategies": ["pca"]}, timeout=60)
    return instance


# -- Jobs -------------------------------------------------------------------------------

ASYNC = {"Prefer": "respond-async"}
FINISHED = ("succeeded", "failed", "cancelled")


def long_job(random_state: int, n_init: int = 1000) -> dict[str, Any]:
    """Seconds of work on digits (about 8 s for 1000 random inits, no early stop)."""
    return {
        "strategies": [{"init": "random", "n_init": n_init}],
        "tol": 0.0,
        "random_state": random_state,
    }


def submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/v1/benchmarks", json=body, headers=ASYNC)
    assert answer.status_code == 202, answer.text
    job: dict[str, Any] = answer.json()
    assert answer.headers["location"] == f"/v1/jobs/{job['id']}"
    assert answer.headers["preference-applied"] == "respond-async"
    return job


def wait_for(
    client: httpx.Client, job_id: str, states: tuple[str, ...], deadline_s: float = 60
) -> list[dict[str, Any]]:
    """Poll the job until it is in one of ``states``; every answer seen, in order."""
    seen = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        seen.append(job)
        if job["state"] in states:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}: {seen[-1]}")


def busy_worker(server: ServiceProcess, deadline_s: float = 30) -> psutil.Process:
    """A child process of the server that computes now: the busiest of those using CPU
    in three windows of 0.3 s running (a worker starting up, warming up for under a
    second, is not taken for it; a small question's steps may run on two at once)."""
    assert server.process is not None
    root = psutil.Process(server.process.pid)
    deadline = time.monotonic() + deadline_s
    streaks: dict[int, int] = {}
    while time.monotonic() < deadline:
        before = {p.pid: (p, cpu_seconds(p)) for p in root.children(recursive=True)}
        time.sleep(0.3)
        grown = {pid: cpu_seconds(p) - used for pid, (p, used) in before.items()}
        streaks = {pid: streaks.get(pid, 0) + 1 for pid in grown if grown[pid] >= 0.05}
        steady = [pid for pid, streak in streaks.items() if streak >= 3]
        if steady:
            return before[max(steady, key=grown.__getitem__)][0]
    raise AssertionError("no worker computed for a second")


def cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return -1.0
    return float(times.user + times.system)


def cpu_stopped(process: psutil.Process, deadline_s: float) -> float:
    """Seconds until ``process`` has exited or stopped using CPU (under 0.02 s in 0.2 s)."""
    began = time.monotonic()
    while time.monotonic() - began < deadline_s:
        used = cpu_seconds(process)
        if used < 0:
            return time.monotonic() - began
        time.sleep(0.2)
        later = cpu_seconds(process)
        if later < 0 or later - used < 0.02:
            return time.monotonic() - began
    raise AssertionError(f"worker {process.pid} still computes after {deadline_s} s")


def read_events(response: httpx.Response, into: list[tuple[str, Any]]) -> None:
    """Server-sent events as (name, data), comments as ("comment", text), until the end."""
    name = None
    for line in response.iter_lines():
        if line.startswith(":"):
            into.append(("comment", line))
        elif line.startswith("event:"):
            name = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            into.append((name or "message", json.loads(line.partition(":")[2])))
            name = None


# -- Tenants: alice and bob --------------------------------------------------------------

KEY_A = "key-of-alice-0123456789ab"
KEY_B = "key-of-bob-9876543210abcd"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"X-API-Key": KEY_B}


def csv(n: int, shift: float = 0.0) -> bytes:
    """A small labelled CSV: two blobs of ``n // 2`` points each."""
    rows = ["a,b,label"]
    for i in range(n):
        centre = 0.0 if i % 2 else 6.0
        rows.append(f"{centre + shift + (i % 7) * 0.1},{centre - (i % 5) * 0.1},{i % 2}")
    return ("\n".join(rows) + "\n").encode()


def upload(client: httpx.Client, headers: dict[str, str], data: bytes) -> httpx.Response:
    return client.post(
        "/v1/datasets?label_column=label",
        content=data,
        headers={**headers, "Content-Type": "text/csv"},
    )


def start_tenants_server(
    tmp_path_factory: pytest.TempPathFactory, name: str, **env: str
) -> ServiceProcess:
    """A real server that knows alice (KEY_A) and bob (KEY_B), on one worker."""
    return start_server(
        tmp_path_factory,
        name,
        CLUSTERBENCH_API_KEYS=f"alice:{KEY_A},bob:{KEY_B}",
        CLUSTERBENCH_WORKERS="1",
        **env,
    )


# -- What the service answers ------------------------------------------------------------


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def report_page(report: httpx.Response) -> str:
    """The text of a report page, checked to be one self-contained HTML page."""
    assert report.status_code == 200, report.text
    assert report.headers["content-type"] == "text/html; charset=utf-8"
    assert report.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    page = report.text
    assert "http://" not in page
    assert "https://" not in page
    return page


async def model_ids(client: httpx.AsyncClient, request: dict[str, object]) -> dict[str, str]:
    response = await client.post("/v1/benchmarks", json=request)
    assert response.status_code == 200, response.text
    return {r["init"]: r["model_id"] for r in response.json()["results"]}


# -- Raw HTTP on a socket -----------------------------------------------------------------


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 15 s pass)."""
    received = b""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        received += chunk
    else:
        raise AssertionError("the server kept the connection open")
    return received


def status_and_body(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/problem+json" in head.lower()
    problem = orjson.loads(body)
    assert problem["status"] == status
    return status, problem


# -- Commands, run as users run them ----------------------------------------------------


def run_module(
    module: str, *args: str, cwd: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` in ``cwd``, with none of this process's CLUSTERBENCH_*
    settings (``env`` adds some), its output captured as text."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERBENCH_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ,
        timeout=timeout,
        check=False,
    )


def clusterbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The ``clusterbench`` console command."""
    return run_module("service.cli", *args, cwd=cwd)


# -- Stored entries -----------------------------------------------------------------------


def make_model(seed: int = 0, scaled: bool = True) -> FittedModel:
    rng = np.random.default_rng(seed)
    return FittedModel(
        init="k-means++",
        n_clusters=3,
        n_features=4,
        cluster_centers=rng.normal(size=(3, 4)),
        scaler_mean=rng.normal(size=4) if scaled else None,
        scaler_scale=rng.uniform(1, 2, size=4) if scaled else None,
        inertia=12.5,
        n_iter=7,
    )


def make_entry(index: int, *, padding: int = 0, models: int = 1) -> StoredBenchmark:
    benchmark_id = f"{index:064x}"
    body = orjson.dumps({"id": benchmark_id, "cached": False, "pad": "x" * padding})
    return StoredBenchmark.from_body(
        benchmark_id, body, {f"{index:063x}{m}": make_model(index * 10 + m) for m in range(models)}
    )
