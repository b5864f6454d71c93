"""CPU-bound work off the event loop: a bounded pool of worker processes with a timeout.

Processes rather than threads, so that a computation past its timeout can be stopped
(its worker is killed and replaced) and a crash takes down one worker, not the server.
Workers are forked from a forkserver that has already imported scikit-learn, and each
caps its BLAS/OpenMP threads so that the workers together do not oversubscribe the CPUs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pebble

from service.errors import ComputeBusyError, ComputeFailedError, ComputeTimeoutError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# workerenv first: it sets the OpenMP environment before scikit-learn loads libgomp.
_PRELOAD = [
    "service.workerenv",
    "service.benchmark",
    "service.plotting",
    "service.formats",
    "service.inline",
]


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
        grace_s: float = 30.0,
    ) -> None:
        self.workers = workers
        self.grace_s = grace_s
        self.threads_per_worker = threads_per_worker
        self.cpus = os.cpu_count() or 1
        self.capacity = workers + queue_size
        self.timeout_s = timeout_s
        self.pending = 0
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(_PRELOAD)
        self._closed = False
        self._pool = self._start()

    async def start(self) -> None:
        """Start the forkserver and every worker now, and wait until they are warm.

        pebble starts them on the first task, in the thread that submits it: that would
        be the event loop, held for the seconds the forkserver takes to import
        scikit-learn (measured: /healthz waited 1.5 s behind the first computation).
        """

        def start_all() -> None:
            futures = [self._pool.submit(os.getpid, None) for _ in range(self.workers)]
            for future in futures:
                future.result()

        await asyncio.to_thread(start_all)

    def _start(self) -> pebble.ProcessPool:
        return pebble.ProcessPool(
            max_workers=self.workers, initializer=_init_worker, context=self._context
        )

    def _restart(self) -> None:
        """Replace a pool that can no longer run tasks (its workers all died at once)."""
        if self._closed or self._pool.active:
            return
        logger.error("the compute pool stopped working; starting a new one")
        self._pool.stop()  # type: ignore[no-untyped-call]
        self._pool = self._start()

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
            return await self._wait(future)
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
        except (concurrent.futures.process.BrokenProcessPool, RuntimeError) as exc:
            # pebble's pool gives up when its workers die faster than it replaces them,
            # and refuses tasks once stopped: a retryable failure, never a 500.
            if isinstance(exc, RuntimeError) and "pool" not in str(exc).lower():
                raise
            self._restart()
            raise ComputeFailedError(
                f"the compute pool failed ({exc}); it has been restarted, try again"
            ) from None
        finally:
            self.pending -= 1

    async def _wait(self, future: concurrent.futures.Future[T]) -> T:
        """The task's result, watching that the pool is still there to give it.

        When several workers die at once pebble may give up on the pool, and a task's
        future can be left without an answer: no request may wait for ever on it.
        """
        waiting = asyncio.wrap_future(future)
        # pebble's own timeout runs from the task's start; this one also covers the
        # queue ahead of it, and is only a backstop.
        deadline = time.monotonic() + self.timeout_s * (self.capacity / self.workers + 1)
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=1.0)
            if done:
                return waiting.result()
            if not self._pool.active:
                future.cancel()
                self._restart()
                raise ComputeFailedError(
                    "the compute pool failed while this request waited; it has been "
                    "restarted, try again"
                )
            if time.monotonic() > deadline + self.grace_s:
                future.cancel()
                raise ComputeFailedError("the compute pool did not answer in time; try again")

    @property
    def healthy(self) -> bool:
        return bool(self._pool.active)

    def close(self) -> None:
        self._closed = True
        self._pool.stop()  # type: ignore[no-untyped-call]
        self._pool.join(timeout=10)
