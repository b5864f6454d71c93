"""Real servers for the scale-out tests: ``redis-server`` (Debian's package) on a loopback port.

``REDIS_SERVER_ARGS`` are the settings the service relies on; ``compose.yaml`` runs Redis
with the same ones (a test checks). No mocks: when ``redis-server`` is missing the tests
that need it are skipped, saying how to install it (``make test`` installs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.jobs.records import JobBackend, JobStore
from service.jobs.redis_records import RedisJobStore
from service.process import ServiceProcess, free_port
from service.redis_store import RedisResultStore
from service.result_backend import ResultBackend
from service.store import ResultStore

MIB = 1024 * 1024

REDIS_SERVER = "redis-server"
# - noeviction: the service bounds its cache itself (CLUSTERBENCH_CACHE_MAX_BYTES); Redis
#   must never evict a job or a lease (see service/redis_store.py), so past maxmemory it
#   refuses writes (507) instead. 3 GB is comfortably above what the service bounds
#   itself to by default (CLUSTERBENCH_CACHE_MAX_BYTES, 1 GiB, for results and again for
#   sweeps and stability runs) plus jobs and leases; a bound, not an allocation.
# - appendonly: jobs and results survive a restart of Redis.
REDIS_SERVER_ARGS = [
    "--maxmemory",
    "3gb",
    "--maxmemory-policy",
    "noeviction",
    "--appendonly",
    "yes",
    "--appendfsync",
    "everysec",
    "--save",
    "",
]

MISSING = (
    "redis-server is not installed: 'apt-get install -y redis-server' (Debian's package; "
    "'make test' installs it)"
)


def redis_server_path() -> str | None:
    return shutil.which(REDIS_SERVER) or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


def require_redis() -> str:
    """The path of redis-server, or skip the test saying how to install it."""
    path = redis_server_path()
    if path is None:
        pytest.skip(MISSING)
    return path


def on_another_host(hostname: str) -> dict[str, Any]:
    """The ``launcher`` and ``args`` of a :class:`ServiceProcess` that runs as if on another
    host (a container of its own): in a UTS namespace of its own, named ``hostname``.

    Replicas on one host tell a stopped one by its process id; across hosts only by its
    job heartbeat, which is what this lets a test see on one machine.
    """
    launcher = ["unshare", "--uts"]
    if os.geteuid() != 0:
        launcher += ["--user", "--map-root-user"]
    code = (
        f"import runpy, socket; socket.sethostname({hostname!r}); "
        "runpy.run_module('service', run_name='__main__', alter_sys=True)"
    )
    return {"launcher": launcher, "args": ["-c", code]}


class RedisServer:
    """``redis-server`` with REDIS_SERVER_ARGS on a free loopback port, its files in ``root``.

    ``stop()`` then ``start()`` restarts it on the same port, as an operator would; with
    ``persist=False`` (no append-only file) it comes back empty.
    """

    def __init__(self, root: Path, *, persist: bool = True) -> None:
        self.executable = require_redis()
        self.persist = persist
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        return [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.root),
            "--daemonize",
            "no",
            "--logfile",
            str(self.root / "redis.log"),
            *REDIS_SERVER_ARGS,
            *([] if self.persist else ["--appendonly", "no"]),
        ]

    def start(self, timeout_s: float = 20) -> None:
        """Start it and wait until it answers PING."""
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.root / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {log}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {timeout_s:g} s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Redis stopped in its tracks (SIGSTOP) and resumed (SIGCONT): it holds its
        connections and reads nothing, as a Redis swapping or paused by its host does."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def flush(self) -> None:
        """Empty every database (between tests sharing one server)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"FLUSHALL\r\n")
            assert s.recv(64).startswith(b"+OK")

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Backend:
    """One store backend for the parametrised store tests: ``sqlite`` in ``root``, or
    ``redis`` on a running :class:`RedisServer` (emptied for each test)."""

    name: str
    root: Path
    redis_url: str | None = None
    opened: list[ResultBackend | JobBackend] = field(default_factory=list)

    def results(self, *, max_bytes: int = 64 * MIB, memory_bytes: int = MIB) -> ResultBackend:
        """A store instance, as another process on the same data would open it."""
        store: ResultBackend
        if self.redis_url is not None:
            store = RedisResultStore(self.redis_url, max_bytes=max_bytes, memory_bytes=memory_bytes)
        else:
            path = self.root / "cache.sqlite3"
            store = ResultStore(path, max_bytes=max_bytes, memory_bytes=memory_bytes)
        self.opened.append(store)
        return store

    def jobs(self) -> JobBackend:
        store: JobBackend
        if self.redis_url is not None:
            store = RedisJobStore(self.redis_url)
        else:
            store = JobStore(self.root / "jobs.sqlite3")
        self.opened.append(store)
        return store

    def close(self) -> None:
        """Close every store opened here (their connections)."""
        for store in self.opened:
            store.close()
        self.opened.clear()

    def settings(self) -> dict[str, Any]:
        """The settings a service on this backend needs beside its data directory."""
        return {} if self.redis_url is None else {"redis_url": self.redis_url}


# Redis runs its own server: make test-fast leaves that half out.
BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.server)]


def backend_of(request: pytest.FixtureRequest, root: Path) -> Backend:
    """The Backend named by ``request.param``; the Redis one is on the ``redis_server``
    fixture (tests/conftest.py), emptied first."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        return Backend("redis", root, server.url)
    return Backend("sqlite", root)


# -- API replicas on one shared data directory and one Redis ---------------------------


def replica(data_dir: Path, redis: RedisServer, **options: Any) -> ServiceProcess:
    """One API replica: the shared data directory, the shared Redis, one worker;
    ``options`` add or override settings, or are what :class:`ServiceProcess` takes."""
    settings: dict[str, Any] = {
        "CLUSTERBENCH_REDIS_URL": redis.url,
        "CLUSTERBENCH_WORKERS": "1",
        "CLUSTERBENCH_REDIS_TIMEOUT_S": "1",
        **options,
    }
    return ServiceProcess(data_dir, **settings)


@dataclass
class Cluster:
    redis: RedisServer
    a: ServiceProcess
    b: ServiceProcess


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def poll(
    url: str,
    job_id: str,
    states: tuple[str, ...],
    deadline_s: float,
    *,
    headers: dict[str, str] | None = None,
    missing_ok: bool = False,
) -> dict[str, Any]:
    """The job as ``url`` reports it, once it is in one of ``states``; with
    ``missing_ok``, a 404 meanwhile is waited through."""
    deadline = time.monotonic() + deadline_s
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=30)
        if not (missing_ok and answer.status_code == 404):
            assert answer.status_code == 200, answer.text
            job = answer.json()
            if job["state"] in states:
                return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states} on {url}: {job}")
