"""CPU-bound work off the event loop: a bounded pool of worker processes with a timeout.

Processes rather than threads, so that a computation past its timeout can be stopped
(its worker is killed and replaced) and a crash takes down one worker, not the server.
Workers are forked from a forkserver that has already imported scikit-learn, and each
caps its BLAS/OpenMP threads so that the workers together do not oversubscribe the CPUs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import multiprocessing
import os
from collections.abc import Callable
from typing import Any, TypeVar

import pebble

from service.errors import ComputeBusyError, ComputeFailedError, ComputeTimeoutError

T = TypeVar("T")

# workerenv first: it sets the OpenMP environment before scikit-learn loads libgomp.
_PRELOAD = ["service.workerenv", "service.benchmark", "service.plotting"]


_controller: Any = None


def _init_worker() -> None:
    global _controller
    from threadpoolctl import ThreadpoolController

    from service.benchmark import warm_up

    # Inspecting the loaded BLAS/OpenMP libraries takes milliseconds: once per worker.
    _controller = ThreadpoolController()
    warm_up()


def _call_with_threads(n_threads: int, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` with BLAS and OpenMP capped at ``n_threads`` threads."""
    with _controller.limit(limits=n_threads):
        return fn(*args)


class ComputePool:
    """At most ``workers`` computations run and ``queue_size`` wait; others get 503.

    Each computation gets ``threads_per_worker`` BLAS/OpenMP threads, or, when that is
    None, the CPUs shared among the computations running: a lone request uses every
    core, concurrent ones split them instead of oversubscribing.
    """

    def __init__(
        self,
        *,
        workers: int,
        queue_size: int,
        timeout_s: float,
        threads_per_worker: int | None = None,
    ) -> None:
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.cpus = os.cpu_count() or 1
        self.capacity = workers + queue_size
        self.timeout_s = timeout_s
        self.pending = 0
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        self._pool = pebble.ProcessPool(
            max_workers=workers,
            initializer=_init_worker,
            context=context,
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker; raise a ServiceError when busy, late or crashed."""
        if self.pending >= self.capacity:
            raise ComputeBusyError(
                f"all {self.workers} worker(s) are busy and {self.capacity - self.workers} "
                "computation(s) are waiting; try again later",
                retry_after=max(1, math.ceil(min(self.timeout_s, 30.0))),
            )
        self.pending += 1
        threads = self.threads_per_worker or max(1, self.cpus // min(self.workers, self.pending))
        try:
            future = self._pool.submit(_call_with_threads, self.timeout_s, threads, fn, *args)
            return await asyncio.wrap_future(future)
        except concurrent.futures.TimeoutError:
            raise ComputeTimeoutError(
                f"the computation ran past the limit of {self.timeout_s:g} s "
                "(CLUSTERBENCH_TIMEOUT_S) and was stopped; ask for less work "
                "(fewer strategies, smaller n_init or max_iter) or raise the limit"
            ) from None
        except pebble.ProcessExpired as exc:
            raise ComputeFailedError(
                f"the worker computing this request died (exit code {exc.exitcode}); "
                "it has been replaced, try again"
            ) from None
        finally:
            self.pending -= 1

    @property
    def healthy(self) -> bool:
        return bool(self._pool.active)

    def close(self) -> None:
        self._pool.stop()  # type: ignore[no-untyped-call]
        self._pool.join(timeout=10)
