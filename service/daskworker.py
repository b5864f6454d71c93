"""What runs inside a Dask worker: each task's real work in a child process it can kill.

Dask cannot interrupt the thread a task runs in. So a task (:func:`run_task`) hands its
work to a small pool of child processes the worker keeps (forked from a forkserver that
has already imported scikit-learn, as the local pool's are) and watches it: when the task
is cancelled (its job deleted, or the service that asked for it gone) or runs past its
limit, the child is killed, so its CPU is free at once; pebble starts another.

Workers load this module at start (``dask worker --preload service.daskworker``), which
starts and warms the children then rather than on the first task, and stops them as the
worker closes: they are not daemonic (pebble's), so a worker whose children still ran
would never exit, neither when its scheduler goes nor on SIGTERM.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pebble
from distributed import get_worker

from service import compute
from service.daskscheduler import SEND_INTERVAL_S
from service.errors import ComputeUnavailableError, WorkerDiedError
from service.tasks import PRELOAD

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How often a running task looks whether it was cancelled: well inside the 2 s in which
# a cancelled computation's CPU must be free.
POLL_S = 0.1

# Under this key a worker tells the scheduler, as it registers, why it cannot run tasks:
# the API's executor reads it from the scheduler (DaskExecutor.problem).
PROBLEM_KEY = "clusterbench-problem"


_lock = threading.Lock()
_pool: pebble.ProcessPool | None = None
_closing = False


def misconfiguration() -> str | None:
    """Why this worker process cannot run tasks, or None."""
    if multiprocessing.current_process().daemon:
        # The nanny starts its worker as a daemon unless told otherwise, and a daemonic
        # process may not start children (multiprocessing asserts it).
        return (
            "runs as a daemonic process, which may not start the child process a task "
            "computes in: start the Dask workers with DASK_DISTRIBUTED__WORKER__DAEMON=False"
        )
    return None


def _init_child() -> None:
    # Die with the worker: a worker killed (kill -9) leaves no child computing for nobody.
    # The child's parent is the forkserver, which exits when the worker is gone.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    compute._init_worker()


def _children(n: int) -> pebble.ProcessPool:
    """This worker's pool of ``n`` child processes, started (again) when needed."""
    global _pool
    with _lock:
        if _closing:
            raise ComputeUnavailableError("this Dask worker is closing; ask again")
        if _pool is None or not _pool.active:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(list(PRELOAD))
            _pool = pebble.ProcessPool(max_workers=n, initializer=_init_child, context=context)
        return _pool


def _warm(n: int) -> None:
    pool = _children(n)
    for future in [pool.schedule(os.getpid) for _ in range(n)]:
        future.result()


def dask_setup(worker: Any) -> None:
    """Preload hook: start and warm the children in the background as the worker starts,
    or, when it cannot have children, say why to the scheduler. Its messages to the
    scheduler go at most :data:`SEND_INTERVAL_S` apart."""
    worker.batched_stream.interval = SEND_INTERVAL_S
    problem = misconfiguration()
    if problem is not None:
        logger.error("this Dask worker cannot run clusterbench tasks: it %s", problem)
        worker.startup_information[PROBLEM_KEY] = lambda _: problem
        return
    threading.Thread(target=_warm, args=(worker.state.nthreads,), daemon=True).start()


def _stop_children() -> None:
    global _pool, _closing
    with _lock:
        _closing = True
        pool, _pool = _pool, None
    if pool is not None:
        pool.stop()  # type: ignore[no-untyped-call]
        pool.join()  # terminates the children, killing any still computing


async def dask_teardown(worker: Any) -> None:
    """Preload hook, as the worker closes: stop the children, so that it can exit."""
    await asyncio.to_thread(_stop_children)


def _task_threads(nthreads: int) -> int:
    """BLAS/OpenMP threads for one task: CLUSTERBENCH_DASK_TASK_THREADS when set (workers
    sharing a machine: its CPUs divided among all their threads), else the CPUs this
    worker may use divided among its own threads."""
    given = os.environ.get("CLUSTERBENCH_DASK_TASK_THREADS", "").strip()
    if given:
        return max(1, int(given))
    return max(1, compute.usable_cpus() // nthreads)


def _still_wanted(worker: Any, key: Any) -> bool:
    task = worker.state.tasks.get(key)
    return task is not None and task.state in ("executing", "long-running")


def run_task(
    key: str, fn: Callable[..., T], args: tuple[Any, ...], limit_s: float, threads: int | None
) -> T | None:
    """The Dask task ``key``: ``fn(*args)`` in a child process, within ``limit_s`` seconds.

    ``threads`` caps BLAS/OpenMP in the child; None: see :func:`_task_threads`. Raises
    TimeoutError past the limit and WorkerDiedError when the
    child dies; returns None, having killed the child, when the task was cancelled.
    """
    worker = get_worker()
    problem = misconfiguration()
    if problem is not None:
        raise ComputeUnavailableError(f"the Dask worker at {worker.address} {problem}")
    nthreads = worker.state.nthreads
    threads = threads or _task_threads(nthreads)
    future = _children(nthreads).schedule(
        compute._call_with_threads, args=(threads, fn, *args), timeout=limit_s
    )
    while True:
        done, _ = concurrent.futures.wait([future], timeout=POLL_S)
        if done:
            break
        if not _still_wanted(worker, key):
            future.cancel()  # type: ignore[no-untyped-call]  # pebble kills the child
            return None
    try:
        result: T = future.result()
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"past the limit of {limit_s:g} s") from None
    except pebble.ProcessExpired as exc:
        raise WorkerDiedError(
            f"the process computing this request on Dask worker {worker.address} died: "
            f"it {compute._death(exc)}; it has been replaced",
            killed=exc.exitcode == -signal.SIGKILL,
        ) from None
    return result
