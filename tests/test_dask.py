"""The Dask executor on a real cluster: ``dask scheduler`` and two ``dask worker`` processes
on loopback, and the service (a real uvicorn process) pointed at them with
CLUSTERBENCH_DASK_SCHEDULER.

The tests of this module share one cluster and run in order; the last one stops the
scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import httpx
import psutil
import pytest

from service import benchmark as bm
from service import tasks
from service.daskscheduler import SEND_INTERVAL_S
from service.datasets import DatasetStore, load_builtin
from service.errors import ComputeTimeoutError, ComputeUnavailableError
from service.executors import DaskExecutor
from service.process import ServiceProcess, free_port
from tests.daskcluster import DaskCluster
from tests.helpers import FINISHED, cpu_seconds, cpu_stopped, long_job, submit, wait_for
from tests.reference import assert_matches, seed_scores

pytestmark = pytest.mark.server

# The functions run on the scheduler travel by value: it cannot import the tests.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    with DaskCluster(workers=2, logs=tmp_path_factory.mktemp("dask-logs")) as running:
        yield running


@pytest.fixture(scope="module")
def server(cluster: DaskCluster, make_server: Callable[..., ServiceProcess]) -> ServiceProcess:
    return make_server(
        "dask",
        CLUSTERBENCH_DASK_SCHEDULER=cluster.address,
        CLUSTERBENCH_DASK_CONNECT_TIMEOUT_S="2",
        CLUSTERBENCH_WORKERS="1",
    )


def fits_on_dask(cluster: DaskCluster) -> int:
    return cluster.steps_done("run_strategy_from_files")


def running_on(cluster: DaskCluster, deadline_s: float = 30) -> str:
    """The address of the worker a strategy fit is processing on, once there is one."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for address, keys in cluster.client.processing().items():
            if any(str(k).startswith("run_strategy_from_files") for k in keys):
                return str(address)
        time.sleep(0.05)
    raise AssertionError("no strategy fit ran on the Dask workers")


def busiest(root: psutil.Process, deadline_s: float = 30) -> psutil.Process:
    """The process under ``root`` (itself included) using the most CPU, once one computes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        members = [root, *root.children(recursive=True)]
        before = {p.pid: (p, cpu_seconds(p)) for p in members}
        time.sleep(0.3)
        grown = {pid: cpu_seconds(p) - used for pid, (p, used) in before.items()}
        pid = max(grown, key=grown.__getitem__)
        if grown[pid] >= 0.15:
            return before[pid][0]
    raise AssertionError("no process computed")


def test_digits_over_dask_equal_scikit_learn_and_the_local_pool(
    cluster: DaskCluster, server: ServiceProcess, tmp_path: Path
) -> None:
    # Check that the seed's benchmark computed on the Dask workers gives every number
    # scikit-learn gives, and the answer the local pool gives, byte for byte but timings.
    before = fits_on_dask(cluster)
    with httpx.Client(base_url=server.url, timeout=120) as client:
        answer = client.post("/v1/benchmarks", json={})
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-cache"] == "miss"
        dask_body = answer.json()
        assert client.get("/readyz").status_code == 200
    assert fits_on_dask(cluster) == before + 3
    X, y = load_builtin("digits")
    for result in dask_body["results"]:
        assert_matches(result, seed_scores(X, y, result["init"], n_clusters=10))
    # One BLAS thread, as each Dask task has here (CLUSTERBENCH_DASK_TASK_THREADS): sums
    # split over another number of threads differ in their last bits.
    local = ServiceProcess(
        tmp_path / "data", CLUSTERBENCH_WORKERS="1", CLUSTERBENCH_THREADS_PER_WORKER="1"
    )
    local.data_dir.mkdir()
    with local, httpx.Client(base_url=local.url, timeout=120) as client:
        local_body = client.post("/v1/benchmarks", json={}).json()
    for body in (dask_body, local_body):
        for result in body["results"]:
            del result["fit_time"]
    assert dask_body == local_body


def test_the_processes_computing_tasks_keep_glibcs_own_mmap_threshold(
    cluster: DaskCluster,
) -> None:
    # Check that workers started as documented (WORKER_ENV, compose.yaml's) and the child
    # processes computing their tasks run without the nanny's MALLOC_TRIM_THRESHOLD_:
    # it would fix glibc's mmap threshold and turn off the dynamic one, so that every
    # array past 128 KiB is mapped and its pages faulted in afresh.
    cluster.wait_for_workers(2)
    for pid in cluster.worker_pids().values():
        worker = psutil.Process(pid)
        children = worker.children(recursive=True)
        assert children, "service.daskworker starts the task processes with the worker"
        for process in (worker, *children):
            assert "MALLOC_TRIM_THRESHOLD_" not in process.environ(), process.cmdline()


def test_a_worker_killed_mid_job_is_retried_and_the_job_succeeds(
    cluster: DaskCluster, server: ServiceProcess
) -> None:
    # Check that kill -9 of the Dask worker running a job's task makes Dask run the task
    # again on a worker still alive, and the job succeeds with scikit-learn's numbers.
    cluster.wait_for_workers(2)
    body = long_job(21, n_init=150)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job = submit(client, body)
        address = running_on(cluster)
        pid = cluster.worker_pids()[address]
        os.kill(pid, signal.SIGKILL)
        final = wait_for(client, job["id"], FINISHED, deadline_s=90)[-1]
        assert final["state"] == "succeeded", final
        result = client.get(final["result_url"]).json()["results"][0]
    X, y = load_builtin("digits")
    expected = seed_scores(X, y, "random", n_clusters=10, n_init=150, tol=0.0, random_state=21)
    assert_matches(result, expected)


def test_cancel_frees_the_dask_workers_cpu_within_2_s(
    cluster: DaskCluster, server: ServiceProcess
) -> None:
    # Check that DELETE of a job whose task runs on a Dask worker stops the process
    # computing it there (its CPU time stops growing within 2 s), and the job is cancelled.
    cluster.wait_for_workers(2)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job = submit(client, long_job(22))
        address = running_on(cluster)
        computing = busiest(psutil.Process(cluster.worker_pids()[address]))
        began = time.monotonic()
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 200
        freed = cpu_stopped(computing, deadline_s=2.0) + (time.monotonic() - began)
        assert freed < 2.0
        final = wait_for(client, job["id"], FINISHED)[-1]
        assert final["state"] == "cancelled"


def _long_params(dataset: str, n_init: int) -> bm.BenchmarkParams:
    return bm.BenchmarkParams(
        dataset=dataset,
        n_clusters=10,
        strategies=(bm.Strategy("random", n_init),),
        tol=0.0,
        random_state=23,
    )


def _graph_bytes(key: str, dask_scheduler: Any) -> int | None:
    """On the scheduler: the pickled size of a task as the scheduler holds it, if it has it."""
    task = dask_scheduler.tasks.get(key)
    return None if task is None else len(pickle.dumps(task.run_spec))


def test_a_task_past_the_limit_is_the_timeout_problem(cluster: DaskCluster, tmp_path: Path) -> None:
    # Check that a task past the executor's limit is stopped (the 504 problem, as with
    # the local pool), and that a task sends paths, not the data, through the scheduler.
    cluster.wait_for_workers(2)
    store = DatasetStore(tmp_path / "datasets")
    info = store.builtin("digits")
    X_path, y_path = store.files(info)
    params = _long_params(info.id, 1000)

    async def run() -> None:
        executor = DaskExecutor(cluster.address, timeout_s=1.0, queue_size=0)
        await executor.start()
        try:
            began = time.monotonic()
            with pytest.raises(ComputeTimeoutError, match="CLUSTERBENCH_TIMEOUT_S"):
                await executor.submit(tasks.run_strategy_from_files, X_path, y_path, params, 0)
            assert time.monotonic() - began < 10
        finally:
            await executor.close()

    asyncio.run(run())
    key = "graph-size-check"
    from service.daskworker import run_task

    future = cluster.client.submit(
        run_task, key, tasks.run_strategy_from_files, (X_path, y_path, params, 0), 30.0, 1, key=key
    )
    try:
        deadline = time.monotonic() + 10
        while (size := cluster.client.run_on_scheduler(_graph_bytes, key)) is None:
            assert time.monotonic() < deadline, "the task never reached the scheduler"
            time.sleep(0.05)
    finally:
        cluster.client.cancel([future], force=True)
    digits_bytes = X_path.stat().st_size
    assert size < 4096 < digits_bytes


def _send_interval(dask_worker: Any) -> float:
    return float(dask_worker.batched_stream.interval)


def test_the_service_and_the_workers_send_to_the_scheduler_promptly(cluster: DaskCluster) -> None:
    # Check that the executor's client and the workers send their messages to the
    # scheduler at most SEND_INTERVAL_S apart: Dask batches them 10 ms and 2 ms apart for
    # throughput, and every task's round trip waited that out (a no-op task took 10.4 ms
    # here, 5.5 ms at 1 ms; measured by `make bench`, not here).
    cluster.wait_for_workers(2)

    async def client_interval() -> float:
        executor = DaskExecutor(cluster.address, timeout_s=10.0, queue_size=0)
        await executor.start()
        try:
            assert executor._client is not None
            return float(executor._client.scheduler_comm.interval)
        finally:
            await executor.close()

    assert asyncio.run(client_interval()) == SEND_INTERVAL_S
    assert set(cluster.client.run(_send_interval).values()) == {SEND_INTERVAL_S}


def test_closing_ends_a_watcher_whose_cancellation_was_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Check that closing the executor ends its watcher even when a connection attempt
    # swallows the cancellation (distributed's connect and Python 3.11's wait_for can,
    # when cancelled as they finish): the closing service waited for it for ever.
    attempts = 0
    trying = asyncio.Event()

    async def connect_swallowing_cancellation(self: DaskExecutor) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:  # start's own attempt
            return
        trying.set()  # the watcher's: closed while it runs
        with contextlib.suppress(asyncio.CancelledError):  # as if it had finished instead
            await asyncio.sleep(5)

    monkeypatch.setattr(DaskExecutor, "_connect", connect_swallowing_cancellation)

    async def run() -> None:
        executor = DaskExecutor(f"tcp://127.0.0.1:{free_port()}", timeout_s=60, queue_size=0)
        await executor.start()
        await trying.wait()
        await asyncio.wait_for(executor.close(), 10)

    asyncio.run(run())


def test_a_scheduler_unreachable_at_start_is_503_until_it_comes(tmp_path: Path) -> None:
    # Check that an executor whose scheduler is not there refuses at once with the 503
    # problem and its Retry-After, and works by itself once a scheduler listens there.
    port = free_port()
    late = DaskCluster(workers=1)
    late.port = port
    late.address = f"tcp://127.0.0.1:{port}"

    async def run() -> None:
        executor = DaskExecutor(late.address, timeout_s=60, queue_size=0, connect_timeout_s=1)
        began = time.monotonic()
        await executor.start()
        try:
            assert time.monotonic() - began < 10
            assert not executor.healthy
            assert "cannot be reached" in (executor.problem or "")
            with pytest.raises(ComputeUnavailableError) as refused, executor.admitted():
                pass
            assert refused.value.retry_after is not None
            await asyncio.to_thread(late.start)
            deadline = time.monotonic() + 30
            while not executor.healthy:
                assert time.monotonic() < deadline, executor.problem
                await asyncio.sleep(0.1)
            with executor.admitted():
                assert executor.pending == 1
        finally:
            await executor.close()

    try:
        asyncio.run(run())
    finally:
        late.stop()


def test_a_worker_started_without_daemon_false_is_503_naming_the_setting(
    cluster: DaskCluster, server: ServiceProcess
) -> None:
    # Check that a plain `dask worker`, whose nanny starts it as a daemonic process (which
    # may not start the child a task computes in), makes a computation 503
    # compute-unavailable naming the setting, and /readyz say so, rather than a 500; and
    # that with workers started as documented the same service computes again.
    setting = "DASK_DISTRIBUTED__WORKER__DAEMON=False"
    body = {"strategies": ["pca"], "random_state": 32}
    cluster.stop_workers()
    cluster.start_workers(1, env={})
    with httpx.Client(base_url=server.url, timeout=60) as client:
        deadline = time.monotonic() + 60
        while "has no workers" in (answer := client.post("/v1/benchmarks", json=body)).text:
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"].endswith("compute-unavailable")
        assert setting in answer.json()["detail"]
        assert int(answer.headers["retry-after"]) >= 1
        while setting not in (ready := client.get("/readyz")).text:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.2)
        assert ready.status_code == 503
        cluster.stop_workers()
        cluster.start_workers()
        cluster.wait_for_workers(cluster.n_workers)
        deadline = time.monotonic() + 60
        while (answer := client.post("/v1/benchmarks", json=body)).status_code != 200:
            assert answer.status_code == 503, answer.text
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)
        assert client.get("/readyz").status_code == 200


# One strategy with a single init: the request, not the fit, is what these tests time.
QUICK = {"strategies": ["pca"], "random_state": 31}


def test_scheduler_down_is_503_and_back_without_restarting_the_service(
    cluster: DaskCluster, server: ServiceProcess
) -> None:
    # Check that with the scheduler gone, a computation is 503 problem+json with
    # Retry-After (at once, not a hang) and /readyz says why; with a scheduler back on
    # the same port (and its workers), the same service process computes again.
    assert server.process is not None
    pid = server.process.pid
    cluster.stop_scheduler()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        deadline = time.monotonic() + 30
        while True:
            began = time.monotonic()
            answer = client.post("/v1/benchmarks", json=QUICK)
            if answer.status_code == 503:
                break
            assert time.monotonic() < deadline, answer.text
        assert time.monotonic() - began < 5
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"].endswith("compute-unavailable")
        assert int(answer.headers["retry-after"]) >= 1
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "Dask scheduler" in ready.json()["detail"]
        cluster.start()
        deadline = time.monotonic() + 60
        while True:
            answer = client.post("/v1/benchmarks", json=QUICK)
            if answer.status_code == 200:
                break
            assert answer.status_code == 503, answer.text
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)
        assert client.get("/readyz").status_code == 200
    assert server.process.pid == pid
    assert server.process.poll() is None


def _worker_stream_intervals(dask_scheduler: Any) -> list[float]:
    return [float(stream.interval) for stream in dask_scheduler.stream_comms.values()]


def test_the_scheduler_sends_its_workers_their_tasks_promptly(cluster: DaskCluster) -> None:
    # Check that the scheduler (started with its preload, as compose.yaml and the README
    # start it) sends each worker its messages at most SEND_INTERVAL_S apart: Dask batches
    # them 5 ms apart, and a task sent just after the previous one's result was released
    # waited that out (a no-op task took 14 ms here, 9.5 ms at 1 ms).
    cluster.wait_for_workers(2)
    assert set(cluster.client.run_on_scheduler(_worker_stream_intervals)) == {SEND_INTERVAL_S}
