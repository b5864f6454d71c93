"""A real Dask cluster on loopback: ``dask scheduler`` and ``dask worker`` as separate
processes, started on free ports and stopped after; used by the tests and ``make bench``.

The command lines are these module constants, so that a test can check that compose.yaml
starts the cluster the same way (``{host}``, ``{port}`` and ``{scheduler}`` filled in).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
from distributed import Client

from service.process import free_port

# The venv's own dask CLI: the workers import this project's code (service.daskworker).
DASK = str(Path(sys.executable).with_name("dask"))

SCHEDULER_ARGS = [
    "scheduler",
    "--host",
    "{host}",
    "--port",
    "{port}",
    "--preload",
    "service.daskscheduler",
    "--no-dashboard",
]

# One thread per worker process: a task is one strategy's fit, which already uses the
# machine's cores through BLAS/OpenMP in the child process service.daskworker starts.
WORKER_ARGS = [
    "worker",
    "{scheduler}",
    "--host",
    "{host}",
    "--nthreads",
    "1",
    "--preload",
    "service.daskworker",
    "--no-dashboard",
    "--death-timeout",
    "60",
]

# The nanny starts the worker as a daemon process by default, and a daemon process may not
# start the child processes that run (and, on cancel, kill) each task's work. Dask's
# statistical profiler samples every thread each 10 ms: off, the fits keep that CPU
# (measured: 16 concurrent benchmarks went 10-30 % faster). The workers here share one
# machine, so each task gets its share of the cores, not all of them.
#
# The nanny starts its worker with MALLOC_TRIM_THRESHOLD_=65536 (Dask's
# distributed.nanny.pre-spawn-environ), which the children computing the tasks inherit: a
# fixed threshold turns off glibc's dynamic one, so every array past 128 KiB is mapped and
# unmapped afresh, its pages faulted in again (measured: 16 concurrent benchmarks on two
# workers 0.82-0.85 of the local pool's throughput with it, 0.93-0.95 without). The
# service gives a task's freed memory back itself (service.worker_memory).
WORKER_ENV = {
    "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": "{'MALLOC_TRIM_THRESHOLD_': None}",
    "CLUSTERBENCH_DASK_TASK_THREADS": "1",
}

# The functions run on the scheduler travel by value: it cannot import the tests.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _steps_done(dask_scheduler: Any, name: str) -> int:
    """On the scheduler: the steps of the worker function ``name`` it has run to an
    answer, alone (tasks named ``name``) or several in one task (``name_x3``:
    service.compute.InTurn)."""
    done = 0
    for prefix_name, prefix in dask_scheduler.task_prefixes.items():
        count = prefix_name.removeprefix(name + "_x")
        steps = 1 if prefix_name == name else int(count) if count.isdigit() else 0
        done += steps * int(prefix.state_counts["memory"])
    return done


# How long a worker that lost its scheduler may take to exit (its supervisor, e.g.
# compose's `restart`, then starts it again).
DEATH_TIMEOUT_S = float(WORKER_ARGS[WORKER_ARGS.index("--death-timeout") + 1])


def _fill(args: list[str], **values: str) -> list[str]:
    return [a.format(**values) for a in args]


class DaskCluster:
    """A scheduler and ``workers`` workers; ``client`` is a synchronous Dask client on it."""

    def __init__(self, workers: int = 2, host: str = "127.0.0.1", logs: Path | None = None):
        self.host = host
        self.port = free_port()
        self.address = f"tcp://{host}:{self.port}"
        self.n_workers = workers
        self.logs = logs
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._client: Client | None = None

    # -- processes -------------------------------------------------------------------

    def _spawn(self, args: list[str], name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log: Any = subprocess.DEVNULL
        if self.logs is not None:
            self.logs.mkdir(parents=True, exist_ok=True)
            log = (self.logs / f"{name}.log").open("ab")
        try:
            return subprocess.Popen(
                [DASK, *args], stdout=log, stderr=log, env={**os.environ, **env}
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()

    def start_scheduler(self) -> None:
        args = _fill(SCHEDULER_ARGS, host=self.host, port=str(self.port))
        self.scheduler = self._spawn(args, "scheduler", {})

    def start_workers(self, n: int | None = None, env: dict[str, str] = WORKER_ENV) -> None:
        """Start ``n`` workers (default: ``workers``) with ``env`` added to this process's."""
        args = _fill(WORKER_ARGS, host=self.host, scheduler=self.address)
        for _ in range(self.n_workers if n is None else n):
            self.start_worker(args, env)

    def start_worker(
        self, args: list[str], env: dict[str, str], name: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``dask *args`` as one more worker; its log is ``{name}.log``."""
        worker = self._spawn(args, name or f"worker-{len(self.workers)}", env)
        self.workers.append(worker)
        return worker

    def start(self, timeout_s: float = 90) -> None:
        """Start the scheduler and the workers, and wait until every worker has joined."""
        self.start_scheduler()
        self.start_workers()
        self.wait_for_workers(self.n_workers, timeout_s)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.address, timeout=30, set_as_default=False)
        return self._client

    def wait_for_workers(self, n: int, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.scheduler is not None and self.scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler exited with {self.scheduler.returncode}")
            try:
                self.client.wait_for_workers(n, timeout=max(1.0, deadline - time.monotonic()))
                return
            except (OSError, TimeoutError):
                if time.monotonic() >= deadline:
                    raise
                self.close_client()
                time.sleep(0.2)

    def steps_done(self, function: str) -> int:
        """The steps of the worker function ``function`` the cluster has run, in all."""
        return int(self.client.run_on_scheduler(_steps_done, name=function))

    def worker_pids(self) -> dict[str, int]:
        """The pid of each worker process (under its nanny), by worker address."""
        return dict(self.client.run(os.getpid))

    def stop_scheduler(self) -> None:
        """Kill the scheduler, as a crash would, and wait until its workers have exited
        by themselves, as they must for a supervisor to start them again."""
        self.close_client()
        if self.scheduler is not None and self.scheduler.poll() is None:
            self.scheduler.kill()
            self.scheduler.wait(timeout=30)
        deadline = time.monotonic() + DEATH_TIMEOUT_S
        for worker in self.workers:
            try:
                worker.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"dask worker {worker.pid} still runs {DEATH_TIMEOUT_S:g} s "
                    "(its --death-timeout) after its scheduler went"
                ) from None
        self.workers = []

    def stop_workers(self) -> None:
        _stop(*self.workers)
        self.workers = []

    def close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close(timeout=5)

    def stop(self) -> None:
        self.close_client()
        self.stop_workers()
        if self.scheduler is not None:
            _stop(self.scheduler)

    def __enter__(self) -> DaskCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop(*processes: subprocess.Popen[bytes]) -> None:
    """SIGTERM to all (a worker's nanny then stops its worker), SIGKILL after 20 s."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
