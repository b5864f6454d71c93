"""CPU-bound work off the event loop: a bounded pool of worker processes with a timeout.

Processes rather than threads, so that a computation past its timeout can be stopped
(its worker is killed and replaced) and a crash takes down one worker, not the server.
Workers are forked from a forkserver that has already imported scikit-learn, and each
runs a computation under a fixed cap of BLAS/OpenMP threads (:class:`ComputePool`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import contextlib
import contextvars
import dataclasses
import logging
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, NotRequired, TypedDict, TypeVar, Unpack, cast

import pebble

from service import threads
from service.errors import (
    ComputeBusyError,
    ComputeFailedError,
    ComputeTimeoutError,
    TenantBusyError,
    WorkerDiedError,
)
from service.tasks import PRELOAD
from service.threads import thread_limit
from service.worker_memory import LetGoOnceSent, task_ended

logger = logging.getLogger(__name__)

T = TypeVar("T")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity; all of them where that is unknown)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _init_worker(warm: bool = True) -> None:
    threads.refresh()
    if warm:
        from service.tasks import warm_up

        warm_up()


def _call_with_threads(n_threads: int, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` with BLAS and OpenMP capped at ``n_threads`` threads, its result let go
    of once sent (:class:`~service.worker_memory.LetGoOnceSent`: a worker's pool receives
    the value itself); then give back the memory it freed, now and once the result has
    left (:func:`~service.worker_memory.task_ended`)."""
    try:
        with thread_limit(n_threads):
            return cast(T, LetGoOnceSent(fn(*args)))
    finally:
        task_ended()


@dataclasses.dataclass(frozen=True)
class InTurn(Generic[T]):
    """Several steps of one computation as one task: ``fn(*args)`` of each call, one after
    another, their results in order (see :meth:`service.runtime.Runtime.run_steps`)."""

    calls: tuple[tuple[Callable[..., T], tuple[Any, ...]], ...]

    @property
    def __name__(self) -> str:
        """The task's name where tasks are named by their function (Dask's keys and
        dashboard): the steps' function and their number, ``run_step_from_files_x3``."""
        return f"{getattr(self.calls[0][0], '__name__', 'step')}_x{len(self.calls)}"

    def __call__(self) -> Turn[T]:
        began = time.perf_counter()
        results = Turn(fn(*args) for fn, args in self.calls)
        results.seconds = time.perf_counter() - began
        return results


class Turn(list[T]):
    """An :class:`InTurn` task's results, in order, and ``seconds``: the time its steps
    took where they ran, without the round trip or the wait in the queue."""

    seconds: float = 0.0


# A computation admitted by ComputePool.admitted() is counted once, however many runs it makes.
_admitted: contextvars.ContextVar[ComputePool | None] = contextvars.ContextVar(
    "admitted", default=None
)


# Whose computation this is: the tenant of the request or job that asked it (None in
# single-user mode). Set once per request; tasks started from it inherit it.
tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)


class TenantShares:
    """Places of a bounded pool held per tenant: one holds at most ``share`` of them.

    Without it one tenant's 100 jobs held every place, and every other tenant got 503
    until they ended (hours at the default timeout).
    """

    def __init__(self, share: float = 1.0) -> None:
        self.share = share
        self.held: dict[str, int] = {}

    def limit(self, capacity: int) -> int:
        return max(1, int(capacity * self.share))

    @contextlib.contextmanager
    def holding(
        self, capacity: int, threads: int, place_s: float | None, name: str
    ) -> Iterator[None]:
        """Count one place for the current tenant, or refuse it (429) at its share;
        ``threads`` computations run at once, each holding its place ``place_s``."""
        who = tenant.get()
        if who is None:
            yield
            return
        held = self.held.get(who, 0)
        limit = self.limit(capacity)
        if held >= limit:
            # Until one of its own computations ends: they share the threads they hold.
            raise TenantBusyError(
                f"this tenant holds {held} of the {capacity} places of the {name} pool, "
                f"its share (CLUSTERBENCH_TENANT_POOL_SHARE={self.share:g}); the others are "
                "kept for other tenants: try again once one of its computations has ended",
                retry_after=place_wait(place_s, held, min(threads, held), float("inf")),
            )
        self.held[who] = held + 1
        try:
            yield
        finally:
            self.held[who] -= 1
            if not self.held[who]:
                del self.held[who]


class GateBounds(TypedDict):
    """What bounds the computations of a :class:`Gate`, as the keyword arguments of a
    pool or an executor: ``timeout_s`` the limit of one computation (all its tasks),
    ``queue_size`` how many may wait for a place, ``threads_per_worker`` the BLAS/OpenMP
    threads each runs with (None: the gate's choice), ``grace_s`` how long past its
    deadline a task's answer is still waited for, ``tenant_share`` the part of the places
    one tenant may hold (:class:`TenantShares`)."""

    timeout_s: float
    queue_size: int
    threads_per_worker: NotRequired[int | None]
    grace_s: NotRequired[float]
    tenant_share: NotRequired[float]


class Gate:
    """What admits computations where they run (the local :class:`ComputePool`, a Dask
    cluster) within their :class:`GateBounds`: the places they hold (``pending``; per tenant,
    ``shares``) and the measures an honest Retry-After is made of."""

    name: str

    def __init__(
        self,
        *,
        timeout_s: float,
        queue_size: int,
        threads_per_worker: int | None = None,
        grace_s: float = 30.0,
        tenant_share: float = 1.0,
    ) -> None:
        self.timeout_s = timeout_s
        self.queue_size = queue_size
        self.threads_per_worker = threads_per_worker
        self.grace_s = grace_s
        self.shares = TenantShares(tenant_share)
        self.pending = 0
        self.worker_deaths = 0
        # Seconds a task takes (moving average): what an honest Retry-After is made of.
        # Until measured, a guess of the same order.
        self.task_s = 1.0
        # Seconds a computation holds its place (all its tasks): what a busy answer's
        # Retry-After is made of.
        self.place_s: float | None = None

    def limit_s(self, timeout_s: float | None) -> float:
        """A task's limit: the gate's own, or ``timeout_s`` (what is left of a longer
        computation's budget) when that is less."""
        return self.timeout_s if timeout_s is None else max(0.001, min(timeout_s, self.timeout_s))

    def _observe(self, seconds: float) -> None:
        self.task_s = 0.8 * self.task_s + 0.2 * seconds


@contextlib.contextmanager
def holding_place(
    gate: Gate, admitted: contextvars.ContextVar[Any], capacity: int, threads: int
) -> Iterator[None]:
    """One place of ``gate`` held by a computation and its tenant; the context is marked
    ``admitted`` by ``gate``, so that its runs count no further. How long the place was
    held goes into ``gate.place_s``."""
    with gate.shares.holding(capacity, threads, gate.place_s, gate.name):
        gate.pending += 1
        token = admitted.set(gate)
        began = time.monotonic()
        try:
            yield
        finally:
            admitted.reset(token)
            gate.pending -= 1
            gate.place_s = observed(gate.place_s, time.monotonic() - began)


# Seconds one computation holds its place before any is measured: a guess of the order
# of a small benchmark.
PLACE_S = 1.0


def observed(average: float | None, seconds: float) -> float:
    """A moving average of ``seconds``: the first measure as it is, then 1/5 of each."""
    return seconds if average is None else 0.8 * average + 0.2 * seconds


def place_wait(place_s: float | None, ahead: int, threads: int, timeout_s: float) -> int:
    """Retry-After for a refused computation: the places ``ahead`` of it, each held for
    ``place_s`` (a whole computation, all its tasks: Retry-After was 1 s for work of
    seconds when it counted one task), shared by ``threads``."""
    place = PLACE_S if place_s is None else place_s
    return max(1, math.ceil(min(timeout_s, place * max(1, ahead) / max(1, threads))))


def _death(exc: pebble.ProcessExpired) -> str:
    """How a worker ended, in words: "killed by SIGKILL" or "exited with code 3"."""
    code = exc.exitcode
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def timed_out(limit_s: float) -> ComputeTimeoutError:
    """The problem of a computation stopped at the limit (one request's, all tasks)."""
    return ComputeTimeoutError(
        f"the computation ran past the limit of {limit_s:g} s "
        "(CLUSTERBENCH_TIMEOUT_S) and was stopped; ask for less work "
        "(fewer strategies, smaller n_init or max_iter) or raise the limit"
    )


class ComputePool(Gate):
    """At most ``workers`` computations run and ``queue_size`` wait; others get 503.

    Each computation gets ``threads_per_worker`` BLAS/OpenMP threads, or, when that is
    None, as many as this process may use CPUs (a lone computation uses every core). A
    fixed number, not the load's: sums split over another number of threads differ in
    their last bits, and the number once depended on how many computations ran. (With
    three threads or more, scikit-learn's Lloyd loop adds the threads' partial sums in
    the order they finish, so the last bits may still differ from run to run.)
    Concurrent computations share the cores through the OS (OpenMP waits passively);
    on a host of many cores and as many workers, set ``threads_per_worker`` lower.
    """

    def __init__(
        self,
        *,
        workers: int,
        name: str = "compute",
        warm: bool = True,
        **bounds: Unpack[GateBounds],
    ) -> None:
        super().__init__(**bounds)
        self.name = name
        # Whether each worker runs a benchmark and a plot as it starts (warm_up): a pool
        # that never fits nor draws (the data lane) is spared their memory.
        self.warm = warm
        self.workers = workers
        self.threads = self.threads_per_worker or usable_cpus()
        self.capacity = workers + self.queue_size
        # Seconds a worker takes to start (a guess until measured): a Retry-After too.
        self.start_s = 3.0
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(list(PRELOAD))
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

        began = time.monotonic()
        await asyncio.to_thread(start_all)
        self.start_s = max(1.0, time.monotonic() - began)

    def _start(self) -> pebble.ProcessPool:
        return pebble.ProcessPool(
            max_workers=self.workers,
            initializer=_init_worker,
            initargs=(self.warm,),
            context=self._context,
        )

    def _restart(self) -> None:
        """Replace a pool that can no longer run tasks (its workers all died at once)."""
        if self._closed or self._pool.active:
            return
        logger.error("the %s pool stopped working; starting a new one", self.name)
        self._pool.stop()  # type: ignore[no-untyped-call]
        self._pool = self._start()

    def _busy(self) -> ComputeBusyError:
        # The wait until a slot frees: the work queued ahead, shared by the workers.
        ahead = self.pending - self.workers + 1
        return ComputeBusyError(
            f"all {self.workers} {self.name} worker(s) are busy and "
            f"{self.capacity - self.workers} task(s) are waiting; try again later",
            retry_after=place_wait(self.place_s, ahead, self.workers, self.timeout_s),
        )

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """Count one computation against the bound now, or refuse it (503) at once.

        For a caller with work to do before its first :meth:`run` (a lease, a store read):
        under a burst, the refusal comes before that work, not after it. Runs inside
        count no further.
        """
        if _admitted.get() is self:
            yield
            return
        if self.pending >= self.capacity:
            raise self._busy()
        with holding_place(self, _admitted, self.capacity, self.workers):
            yield

    async def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        """Run ``fn(*args)`` in a worker; raise a ServiceError when busy, late or crashed.

        ``timeout_s`` (at most the pool's own) is what is left of a longer computation's
        budget. Cancelling the awaiting task cancels the task: a running one's worker is
        terminated (and replaced), so its CPU is free at once.
        """
        with self.admitted():
            return await self._run(fn, *args, timeout_s=timeout_s)

    async def _run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        limit = self.limit_s(timeout_s)
        try:
            future = self._pool.submit(_call_with_threads, limit, self.threads, fn, *args)
        except RuntimeError:
            # pebble refuses tasks once its pool has stopped: a retryable failure.
            if self._pool.active:
                raise
            self._restart()
            raise self._failed("the pool had stopped") from None
        began = time.monotonic()
        try:
            result = await self._wait(future)
        except pebble.ProcessExpired as exc:
            self.worker_deaths += 1
            how = _death(exc)
            logger.error(
                "%s worker %s %s while running %s",
                self.name,
                exc.pid,
                how,
                getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "a task"),
            )
            raise WorkerDiedError(
                f"the worker computing this request died: it {how}"
                + (
                    " (most likely for memory: ask for less work or data)"
                    if exc.exitcode == -signal.SIGKILL
                    else ""
                )
                + "; it has been replaced",
                retry_after=math.ceil(self.start_s),
                killed=exc.exitcode == -signal.SIGKILL,
            ) from None
        except concurrent.futures.process.BrokenProcessPool as exc:
            # pebble gives up on a pool whose workers die faster than it replaces them.
            self._restart()
            raise self._failed(f"its workers stopped ({exc})") from None
        except concurrent.futures.TimeoutError:
            self._observe(self.timeout_s)
            raise timed_out(self.timeout_s) from None
        self._observe(time.monotonic() - began)
        return result

    def _failed(self, why: str) -> ComputeFailedError:
        return ComputeFailedError(
            f"the {self.name} pool failed: {why}; it has been restarted, try again",
            retry_after=math.ceil(self.start_s),
        )

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
            try:
                done, _ = await asyncio.wait({waiting}, timeout=1.0)
            except asyncio.CancelledError:
                # pebble terminates the worker of a running task whose future is cancelled.
                future.cancel()
                raise
            if done:
                return waiting.result()
            if not self._pool.active:
                future.cancel()
                self._restart()
                raise self._failed("it stopped while this request waited")
            if time.monotonic() > deadline + self.grace_s:
                future.cancel()
                raise ComputeFailedError(f"the {self.name} pool did not answer in time; try again")

    @property
    def healthy(self) -> bool:
        return bool(self._pool.active)

    def close(self) -> None:
        self._closed = True
        self._pool.stop()  # type: ignore[no-untyped-call]
        self._pool.join(timeout=10)
