"""Faults around the store: killed lease owners, full and read-only disks, split brains."""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from service.compute import ComputePool
from service.datasets import DatasetStore
from service.engine import BenchmarkEngine
from service.errors import ComputeInProgressError, StorageFullError
from service.jobs.records import JobRecord, JobStore
from service.process import ServiceProcess
from service.schemas import BenchmarkRequest
from service.store import ResultStore
from service.tenants import TenantStore
from tests.conftest import make_settings, serve
from tests.helpers import make_entry

MIB = 1024 * 1024
# Computes for a few seconds: long enough to be killed in the middle.
SLOW = {"strategies": [{"init": "random", "n_init": 200}], "tol": 0.0, "random_state": 5}


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(0.05)


def lease_count(data_dir: Path) -> int:
    with closing(sqlite3.connect(data_dir / "cache.sqlite3", timeout=30)) as db:
        return int(db.execute("SELECT COUNT(*) FROM leases").fetchone()[0])


# -- leases ------------------------------------------------------------------------------


@pytest.mark.server
def test_a_killed_owners_lease_does_not_hold_the_request_after_a_restart(
    tmp_path: Path,
) -> None:
    # Check that a server killed (with its workers) in the middle of a computation leaves
    # a lease that does not hold back the same request once restarted: it is computed at
    # once, where it waited timeout_s + 60 s before.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    settings = {"CLUSTERBENCH_WORKERS": "1", "CLUSTERBENCH_TIMEOUT_S": "60"}
    server = ServiceProcess(data_dir, **settings)
    server.start()
    assert server.process is not None
    family = [server.process, *psutil.Process(server.process.pid).children(recursive=True)]

    def ask() -> None:
        with suppress(httpx.HTTPError):
            httpx.post(f"{server.url}/v1/benchmarks", json=SLOW, timeout=120)

    asking = threading.Thread(target=ask)
    asking.start()
    try:
        wait_for(lambda: lease_count(data_dir) == 1, 60, "the computation did not start")
    finally:
        for process in family:
            with suppress(psutil.NoSuchProcess):
                os.kill(process.pid, signal.SIGKILL)
        server.process.wait()
        asking.join()
    assert lease_count(data_dir) == 1  # the lease outlived its owner

    restarted = ServiceProcess(data_dir, **settings)
    restarted.start()
    try:
        started = time.monotonic()
        response = httpx.post(f"{restarted.url}/v1/benchmarks", json=SLOW, timeout=60)
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        assert response.headers["x-cache"] == "miss"
        assert elapsed < 30, f"answered after {elapsed:.1f} s"
        assert lease_count(data_dir) == 0
    finally:
        restarted.stop()


def _take_lease_and_die(path: Path, key: str) -> None:
    ResultStore(path, max_bytes=MIB, memory_bytes=0).try_lease(key, "dead", ttl_s=600)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_lease_whose_process_died_is_free_at_once(tmp_path: Path) -> None:
    # Check that a lease taken for 600 s by a process that was then killed is free for
    # another owner at once, while a living owner's lease still holds.
    path = tmp_path / "cache.sqlite3"
    dying = multiprocessing.get_context("spawn").Process(
        target=_take_lease_and_die, args=(path, "job")
    )
    dying.start()
    dying.join(60)
    assert dying.exitcode == -signal.SIGKILL
    store = ResultStore(path, max_bytes=MIB, memory_bytes=0)
    assert lease_count(tmp_path) == 1
    assert store.try_lease("job", "alive", ttl_s=600)
    assert not ResultStore(path, max_bytes=MIB, memory_bytes=0).try_lease("job", "other", 600)
    assert store.renew_lease("job", "alive", ttl_s=600)
    assert not store.renew_lease("job", "other", ttl_s=600)


@pytest.mark.anyio
async def test_a_waiter_gives_up_after_its_own_timeout(tmp_path: Path) -> None:
    # Check that a request waiting on another owner's computation answers 503 with
    # Retry-After once its own timeout has passed, rather than waiting for the owner.
    results = ResultStore(tmp_path / "cache.sqlite3", max_bytes=MIB, memory_bytes=0)
    pool = ComputePool(workers=1, queue_size=0, timeout_s=1.0)
    try:
        engine = BenchmarkEngine(DatasetStore(tmp_path / "datasets"), results, pool)
        job = await engine.resolve(BenchmarkRequest(dataset="iris"))
        assert results.try_lease(job.id, "a living process elsewhere", ttl_s=600)
        started = time.monotonic()
        with pytest.raises(ComputeInProgressError) as caught:
            await engine.get_or_compute(job)
        assert 1.0 <= time.monotonic() - started < 5.0
        assert caught.value.status == 503
        assert caught.value.headers() == {"Retry-After": "1"}
        assert engine.stats.computations == 0
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_computing_owner_keeps_its_short_lease(tmp_path: Path) -> None:
    # Check that a lease far shorter than a computation holds while its owner renews it,
    # and expires soon once the owner stops.
    results = ResultStore(tmp_path / "cache.sqlite3", max_bytes=MIB, memory_bytes=0)
    results.lease_ttl_s, results.lease_renew_s = 0.4, 0.1
    pool = ComputePool(workers=1, queue_size=0, timeout_s=1.0)
    try:
        engine = BenchmarkEngine(DatasetStore(tmp_path / "datasets"), results, pool)
        assert results.try_lease("job", engine._owner, ttl_s=results.lease_ttl_s)
        renewing = asyncio.create_task(engine._renew_lease("job"))
        await asyncio.sleep(1.2)
        assert not results.try_lease("job", "other", ttl_s=60)
        renewing.cancel()
        deadline = time.monotonic() + 5
        while not results.try_lease("job", "other", ttl_s=60):
            assert time.monotonic() < deadline, "the lease outlived its renewals"
            await asyncio.sleep(0.05)
    finally:
        pool.close()


# -- full and read-only disks ------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB file system of its own, to fill or make read-only (mounting needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until its file system is full; returns it."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out, suppress(OSError):
        while out.write(b"\0" * 65536):
            pass
    assert os.statvfs(folder).f_bavail < 16
    return filler


def remount(mount_point: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount_point)], check=True)


def test_a_full_disk_refuses_a_result_whole(small_fs: Path) -> None:
    # Check that a result the full disk refuses raises StorageFullError and leaves no
    # part of itself (no row, no model), and that the same write works once space is back.
    store = ResultStore(small_fs / "cache.sqlite3", max_bytes=10**9, memory_bytes=MIB)
    store.put(make_entry(1))
    assert store.storage_problem() is None
    filler = fill(small_fs)
    entry = make_entry(2, padding=200_000, models=3)
    with pytest.raises(StorageFullError) as caught:
        store.put(entry)
    assert caught.value.status == 507
    assert "full" in (store.storage_problem() or "")
    assert store.get(make_entry(1).id) is not None  # reads still work
    filler.unlink()
    assert store.storage_problem() is None
    assert store.get(entry.id) is None
    assert all(store.get_model(model_id) is None for model_id in entry.models)
    store.put(entry)
    assert store.get(entry.id) is not None


def test_a_full_disk_refuses_job_and_tenant_records_whole(small_fs: Path) -> None:
    # Check that a job record or a tenant's claim the full disk refuses raises
    # StorageFullError (it was sqlite3's error, a 500, or the failed ROLLBACK's), stores
    # nothing, and that the same writes work once space is back.
    jobs, tenants = JobStore(small_fs / "jobs.sqlite3"), TenantStore(small_fs / "t.sqlite3")
    assert tenants.claim("ann", "dataset", "a" * 64)
    assert jobs.page(state=None, limit=10, before=None) == []  # opened before the disk fills

    def create() -> tuple[JobRecord, bool]:
        request = {"padding": "x" * 200_000}
        return jobs.create_or_join(
            kind="benchmark", key="k", request=request, total=1, owner="o", alive=lambda _: True
        )

    filler = fill(small_fs)
    with pytest.raises(StorageFullError):
        create()
    with pytest.raises(StorageFullError):
        tenants.claim("ann", "dataset", "b" * 64)
    filler.unlink()
    assert jobs.page(state=None, limit=10, before=None) == []
    assert tenants.held("ann", "dataset") == ["a" * 64]
    job, created = create()
    assert created
    assert jobs.get(job.id) is not None
    assert tenants.claim("ann", "dataset", "b" * 64)


@pytest.mark.server
def test_a_full_disk_gives_507_and_unready_until_space_returns(small_fs: Path) -> None:
    # Check that with the data directory's disk full a benchmark (new data or new result)
    # is a 507 problem with Retry-After, /readyz is 503, nothing is half-written, and all
    # works again without a restart once space is freed.
    data_dir = small_fs / "data"
    data_dir.mkdir()
    new_data = {"dataset": "digits", "strategies": ["k-means++"]}
    new_result = {"dataset": "iris", "random_state": 2}
    with ServiceProcess(data_dir, CLUSTERBENCH_WORKERS="1") as server:
        url = server.url
        assert httpx.post(f"{url}/v1/benchmarks", json={"dataset": "iris"}, timeout=60).is_success
        filler = fill(small_fs)
        for request in (new_data, new_result):
            refused = httpx.post(f"{url}/v1/benchmarks", json=request, timeout=60)
            assert refused.status_code == 507, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["type"] == "urn:clusterbench:problem:storage-full"
            assert "full" in refused.json()["detail"]
            assert int(refused.headers["retry-after"]) > 0
        upload = httpx.post(
            f"{url}/v1/datasets", content=b"a,b\n1,2\n3,4\n", headers={"content-type": "text/csv"}
        )
        assert upload.status_code == 507, upload.text
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503
        assert "full" in ready.json()["detail"]
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert [p.name for p in (data_dir / "datasets").iterdir() if p.name.startswith(".")] == []

        filler.unlink()
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 10, "not ready again")
        again = httpx.post(f"{url}/v1/benchmarks", json=new_result, timeout=60)
        assert again.status_code == 200
        assert again.headers["x-cache"] == "miss"
        assert httpx.post(f"{url}/v1/benchmarks", json=new_data, timeout=60).status_code == 200


def leave_free(folder: Path, n_bytes: int) -> Path:
    """Write a file in ``folder`` that leaves about ``n_bytes`` free on its file system."""
    filler = folder / "filler"
    size = shutil.disk_usage(folder).free - n_bytes
    assert size > 0
    with filler.open("wb") as out:
        for start in range(0, size, 1 << 20):
            out.write(b"\0" * min(1 << 20, size - start))
    return filler


def npy_upload(seed: int) -> bytes:
    """A distinct ``.npy`` file of 80,000 x 8 float64 (5 MB), big-endian: the store
    writes it converted, a copy beside the scratch file (one in the machine's order it
    would link instead)."""
    buffer = io.BytesIO()
    X = np.random.default_rng(seed).random((80_000, 8)).astype(">f8")
    np.save(buffer, X, allow_pickle=False)
    return buffer.getvalue()


def local_port(response: httpx.Response) -> int:
    """The client's port of the connection ``response`` came on."""
    port: int = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    return port


@pytest.mark.server
def test_an_upload_the_disk_fills_under_is_507_and_the_connection_stays(
    small_fs: Path,
) -> None:
    # Check that an upload whose dataset the disk cannot hold (its scratch copy fits;
    # numpy's short write then has no errno) is a 507 problem, after which the same
    # keep-alive connection answers; that nothing is half-written and /readyz is 503
    # though the undone write freed space; that on the disk filled up listing and
    # benchmarking are 507, never 500; and that all works once space is back.
    data_dir = small_fs / "data"
    data_dir.mkdir()
    headers = {"content-type": "application/x-npy"}
    with (
        ServiceProcess(data_dir, CLUSTERBENCH_WORKERS="1") as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        first = client.post("/v1/datasets", content=npy_upload(0), headers=headers)
        assert first.status_code == 201, first.text
        port = local_port(first)
        content = npy_upload(1)
        leave_free(small_fs, len(content) * 3 // 2)
        refused = client.post("/v1/datasets", content=content, headers=headers)
        assert refused.status_code == 507, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == "urn:clusterbench:problem:storage-full"
        assert "storing dataset" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) > 0
        assert local_port(refused) == port

        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "full" in ready.json()["detail"]
        assert local_port(ready) == port
        datasets = data_dir / "datasets"
        assert sorted(p.name for p in datasets.iterdir()) == [first.json()["id"]]
        assert list((data_dir / "tmp").iterdir()) == []

        filler = fill(small_fs)
        for answer in (
            client.post("/v1/datasets", content=content, headers=headers),
            client.get("/v1/datasets"),
            client.post("/v1/benchmarks", json={}),
        ):
            assert answer.status_code == 507, answer.text
            assert answer.json()["type"] == "urn:clusterbench:problem:storage-full"
            assert local_port(answer) == port
        assert [p.name for p in datasets.iterdir() if p.name.startswith(".")] == []

        filler.unlink()
        assert client.delete(f"/v1/datasets/{first.json()['id']}").status_code == 204
        wait_for(lambda: client.get("/readyz").status_code == 200, 10, "not ready again")
        again = client.post("/v1/datasets", content=content, headers=headers)
        assert again.status_code == 201, again.text
        assert client.get("/v1/datasets").status_code == 200
        assert client.post("/v1/benchmarks", json={}).status_code == 200


@pytest.mark.anyio
async def test_a_read_only_data_dir_gives_503_until_writable(small_fs: Path) -> None:
    # Check that on a read-only data directory /readyz is 503 and a benchmark a 503
    # problem saying so (never a 500), and that both recover once it is writable again.
    data_dir = small_fs / "data"
    (data_dir / "datasets").mkdir(parents=True)
    remount(small_fs, "ro")
    async with serve(make_settings(data_dir, workers=1)) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "read-only" in ready.json()["detail"]
        refused = await client.post("/v1/benchmarks", json={"dataset": "iris"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["type"] == "urn:clusterbench:problem:storage-read-only"
        assert "retry-after" in refused.headers

        remount(small_fs, "rw")
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.post("/v1/benchmarks", json={"dataset": "iris"})).status_code == 200


@pytest.mark.server
def test_readyz_answers_at_once_while_the_database_is_locked(
    server: ServiceProcess,
) -> None:
    # Check that while another process holds the cache database's write lock, /readyz
    # answers 503 within seconds (it waited 30 s on the event loop) and /healthz at once.
    with closing(sqlite3.connect(server.data_dir / "cache.sqlite3", timeout=30)) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            answers: dict[str, httpx.Response] = {}
            asking = threading.Thread(
                target=lambda: answers.update(ready=httpx.get(f"{server.url}/readyz", timeout=10))
            )
            asking.start()
            for _ in range(5):
                started = time.monotonic()
                assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
                assert time.monotonic() - started < 0.5
            asking.join()
            assert answers["ready"].status_code == 503
            assert "locked" in answers["ready"].json()["detail"]
        finally:
            db.execute("ROLLBACK")
    assert httpx.get(f"{server.url}/readyz").status_code == 200


# -- one corrupt database, two processes -------------------------------------------------


def _stale_reader(path: str, entries: list[str], channel: Connection) -> None:
    """Open the store and read one entry, then, when told, read another and write two."""
    store = ResultStore(Path(path), max_bytes=10**9, memory_bytes=0)
    assert store.get(entries[0]) is not None
    channel.send("open")
    channel.recv()
    store.get(entries[1])
    for index in (201, 202):
        store.put(make_entry(index))
    channel.send("written")


def test_two_processes_recovering_one_corrupt_database_lose_nothing(tmp_path: Path) -> None:
    # Check that when a database is corrupted under a process that has it open, and
    # another process sets it aside and stores results in a fresh one, the first one
    # neither moves that fresh database aside nor writes into the one set aside.
    path = tmp_path / "cache.sqlite3"
    store = ResultStore(path, max_bytes=10**9, memory_bytes=0)
    old = [make_entry(i, padding=20_000) for i in range(10)]
    for entry in old:
        store.put(entry)
    store.close()  # the last connection: everything is checkpointed into the file

    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    reader = multiprocessing.get_context("spawn").Process(
        target=_stale_reader, args=(str(path), [old[0].id, old[7].id], theirs)
    )
    reader.start()
    try:
        assert ours.poll(60)
        assert ours.recv() == "open"
        with path.open("r+b") as handle:
            handle.truncate(4096)
        fresh = ResultStore(path, max_bytes=10**9, memory_bytes=0)
        assert len(list(tmp_path.glob("cache.sqlite3.corrupt-*[0-9]"))) == 1
        for index in (101, 102, 103):
            fresh.put(make_entry(index))
        ours.send("go")
        assert ours.poll(60)
        assert ours.recv() == "written"
    finally:
        reader.join(60)
    assert reader.exitcode == 0
    check = ResultStore(path, max_bytes=10**9, memory_bytes=0)
    for index in (101, 102, 103, 201, 202):
        assert check.get(make_entry(index).id) is not None, index
    assert len(list(tmp_path.glob("cache.sqlite3.corrupt-*[0-9]"))) == 1


def _write_on_start(path: str, first: int) -> None:
    store = ResultStore(Path(path), max_bytes=10**9, memory_bytes=0)
    for index in range(first, first + 3):
        store.put(make_entry(index))


@pytest.mark.parametrize("attempt", range(3))
def test_two_processes_starting_on_a_garbage_database_lose_nothing(
    tmp_path: Path, attempt: int
) -> None:
    # Check that two processes opening one garbage database at once, each storing three
    # results, leave all six readable.
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(b"this is not a database" * 1000)
    context = multiprocessing.get_context("fork")
    writers = [
        context.Process(target=_write_on_start, args=(str(path), first)) for first in (300, 400)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    check = ResultStore(path, max_bytes=10**9, memory_bytes=0)
    for index in (300, 301, 302, 400, 401, 402):
        assert check.get(make_entry(index).id) is not None, index
