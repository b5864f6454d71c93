"""Computations run once, whatever they compute: the runtime under every kind.

Knows no kind of question (benchmark, sweep, stability run): it runs a computation once
however many ask at once (single flight, in this process), under a lease across the
processes sharing the store, within the pool's bound, remembering a failure worth not
repeating; as steps on an executor, telling followers its progress; and keeps the
scratch files of request bodies and uploads. :class:`service.engine.BenchmarkEngine`
is the benchmark service built on it; sweeps and stability runs are documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import math
import os
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from anyio import to_thread

from service import processes, threads
from service.compute import ComputePool, Turn, timed_out
from service.errors import (
    ComputeCancelledError,
    ComputeInProgressError,
    ComputeTimeoutError,
    DatasetNotFoundError,
    ServiceError,
    StorageError,
    WorkerDiedError,
)
from service.executors import Executor, Handle, LocalExecutor, submit_in_turn
from service.memory import keep_recent

if TYPE_CHECKING:
    from service.datasets import DatasetInfo
    from service.result_backend import ResultBackend

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long the steps sharing one task take together, at most, as the steps before them
# were paced: about the interval at which a job's progress moves.
BATCH_S = 0.25

# Hears a computation's steps: (steps done, steps in all, stage).
Progress = Callable[[int, int, str], None]
# Computes a sweep's or a stability run's JSON answer, telling a Progress its steps.
# A document computed: the bytes to answer with now and the bytes to store (the same for a
# blob, a plot or an ONNX model; an answer's first and hit forms, service.schemas.answer_forms).
ComputeDocument = Callable[[Progress], Awaitable[tuple[bytes, bytes]]]


@dataclass(frozen=True)
class Step(Generic[T]):
    """One step of a computation: ``fn(*args)`` in a worker (alone in a task, or with
    the steps beside it: :meth:`Runtime.run_steps`), ``stage`` its name in the progress
    a job shows."""

    stage: str
    fn: Callable[..., T]
    args: tuple[Any, ...]
    # Its expected cost (> 0), in the same units for every step of its function: k x
    # n_init for a fit (times the seeds, for a stability run's). A sweep's steps grow with
    # k, so a pace measured at k = 2 does not batch the steps at k = 500 with it, nor one
    # benchmark's at k = 10 the next's at k = 500 (the pace outlives a computation: Pace).
    weight: float = 1.0


class Pace(NamedTuple):
    """How quickly a computation's steps went: ``seconds`` per unit of
    :attr:`Step.weight`, in the worker, and the most ``steps`` one of its tasks took.
    The next computation's first tasks on the same data are sized by it."""

    seconds: float = math.inf
    steps: int = 0


# Paces remembered (one per dataset, step function and fit settings), the least recent
# forgotten first.
PACES_KEPT = 1024


def document_flight(kind: str, key: str) -> str:
    """The name under which a sweep or stability run (``kind``) is computed: in flight,
    in the lease across processes, and in the failures remembered."""
    return f"{kind}:{key}"


class FailureMemory:
    """Questions whose computation timed out or whose worker was killed, for ``ttl_s``.

    Asked again at once, such a question would take a worker for the same answer (or
    kill it again): the retry gets the remembered problem at once instead, with the
    seconds left as ``Retry-After``.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._failed: OrderedDict[str, tuple[float, ServiceError]] = OrderedDict()

    def remember(self, key: str, error: ServiceError) -> None:
        if self.ttl_s <= 0:
            return
        error.retry_after = math.ceil(self.ttl_s)
        keep_recent(self._failed, key, (time.monotonic() + self.ttl_s, error), self.MAX_ENTRIES)

    def check(self, key: str) -> None:
        """Raise the problem remembered for ``key``, if it is still remembered."""
        entry = self._failed.get(key)
        if entry is None:
            return
        until, error = entry
        left = until - time.monotonic()
        if left <= 0:
            del self._failed[key]
            return
        again = copy.copy(error)
        again.detail = (
            f"{error.detail} [this same request failed {self.ttl_s - left:.0f} s ago and is "
            f"not computed again for {left:.0f} s]"
        )
        again.retry_after = math.ceil(left)
        raise again

    async def guard(self, key: str, work: Coroutine[Any, Any, T]) -> T:
        """Await ``work``, remembering its failure when it is one to remember."""
        try:
            return await work
        except ComputeTimeoutError as exc:
            self.remember(key, exc)
            raise
        except WorkerDiedError as exc:
            if exc.killed:
                self.remember(key, exc)
            raise


_SCRATCH_NAME = re.compile(r"[a-z]+-(?P<pid>[0-9]+)-[0-9a-f]{32}")


class Runtime:
    """Single flight, leases, failure memory, steps on an executor and scratch files,
    over the store ``results`` (its leases and documents) and the pool ``pool``."""

    def __init__(
        self,
        results: ResultBackend,
        pool: ComputePool,
        scratch_dir: Path,
        *,
        failure_ttl_s: float = 0.0,
        executor: Executor | None = None,
    ) -> None:
        self.results = results
        self.pool = pool
        self.scratch_dir = scratch_dir
        # Where the fits run, one task per step: the local pool, or a cluster.
        self.executor: Executor = executor or LocalExecutor(pool)
        self.failures = FailureMemory(failure_ttl_s)
        self._listeners: dict[str, list[Progress]] = {}
        self._inflight: dict[str, asyncio.Task[Any]] = {}
        self._paces: OrderedDict[tuple[str, str, str], Pace] = OrderedDict()
        self._stepping = 0  # computations in run_steps: each holds a lane at least
        self._owner = f"{os.getpid()}-{uuid.uuid4().hex}"

    @property
    def owner(self) -> str:
        """This process's name in leases (and jobs): ``"<pid>-<hex>"``."""
        return self._owner

    @contextlib.asynccontextmanager
    async def scratch_file(self, prefix: str) -> AsyncIterator[Path]:
        """A path under ``<data_dir>/tmp`` for the caller to fill, removed on exit.

        Its name carries this process's id, so that :meth:`clean_scratch` knows whose
        it is when several processes share the data directory.
        """
        self.scratch_dir.mkdir(mode=0o700, exist_ok=True)
        path = self.scratch_dir / f"{prefix}-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def clean_scratch(self) -> int:
        """Remove scratch files left by processes that are gone (a crash, a kill -9).

        Returns how many were removed.
        """
        removed = 0
        if not self.scratch_dir.is_dir():
            return removed
        for path in self.scratch_dir.iterdir():
            match = _SCRATCH_NAME.fullmatch(path.name)
            if match is not None and processes.pid_alive(int(match["pid"])):
                continue
            path.unlink(missing_ok=True)
            removed += 1
        if removed:
            logger.warning("removed %d scratch file(s) left by stopped processes", removed)
        return removed

    async def cached_document(self, kind: str, key: str) -> bytes | None:
        """A stored sweep or stability run (``kind``), from memory or disk, or None."""
        return await to_thread.run_sync(self.results.get_document, kind, key)

    async def get_or_compute_document(
        self, kind: str, key: str, compute: ComputeDocument
    ) -> tuple[bytes, bool]:
        """The stored answer of kind ``kind`` under ``key``, computed once by ``compute``
        however many ask at once (in this process, and across processes by a lease).

        Returns the JSON bytes and whether they came from the cache.
        """
        # Not counted in the benchmark engine's hits and misses: those are its cache's.
        hit = await to_thread.run_sync(self.results.get_document, kind, key)
        if hit is not None:
            return hit, True
        flight = document_flight(kind, key)
        self.failures.check(flight)
        return await self._once(flight, lambda: self._start_document(kind, key, compute))

    def document_computation(
        self, kind: str, key: str, compute: ComputeDocument, progress: Progress
    ) -> asyncio.Task[tuple[bytes, bool]]:
        """The task computing the answer of kind ``kind`` under ``key`` (the one in flight,
        a synchronous request's too, or a new one); ``progress`` hears its steps."""
        return self._follow(
            document_flight(kind, key), lambda: self._start_document(kind, key, compute), progress
        )

    def _start_document(
        self, kind: str, key: str, compute: ComputeDocument
    ) -> Coroutine[Any, Any, tuple[bytes, bool]]:
        flight = document_flight(kind, key)
        return self._admitted(flight, self._compute_document(kind, key, compute), executor=True)

    async def _compute_document(
        self, kind: str, key: str, compute: ComputeDocument
    ) -> tuple[bytes, bool]:
        store = self.results
        flight = document_flight(kind, key)

        async def compute_and_store() -> bytes:
            first, stored = await compute(functools.partial(self._report, flight))
            await to_thread.run_sync(store.put_document, kind, key, stored)
            return first

        stored = functools.partial(store.get_document, kind, key)
        return await self._leased(flight, f"{kind} {key}", stored, compute_and_store)

    async def _leased(
        self,
        key: str,
        what: str,
        stored: Callable[[], T | None],
        compute: Callable[[], Awaitable[T]],
    ) -> tuple[T, bool]:
        """``compute()`` under this process's lease on ``key``, or the answer ``stored()``
        reads once another process holding the lease has stored it; and whether it was
        stored.

        Other processes on the same data directory may be computing the same question:
        the lease lets one compute while the others wait for its result. It is short and
        renewed while the computation runs, and the store frees at once a lease whose
        process died, so a killed owner never leaves the question locked (it did for
        timeout_s + 60 s). Nobody waits past their own timeout; ``what`` names the
        question in the problem of one who waited that long.
        """
        store = self.results
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.pool.timeout_s
        delay = 0.05
        while not await to_thread.run_sync(store.try_lease, key, self._owner, store.lease_ttl_s):
            if loop.time() >= deadline:
                raise ComputeInProgressError(
                    f"another request is computing {what} and it did not finish "
                    f"within this request's limit of {self.pool.timeout_s:g} s "
                    "(CLUSTERBENCH_TIMEOUT_S); ask again later for its result",
                    retry_after=max(1, round(min(self.pool.timeout_s, 30.0))),
                )
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.5)
            done = await to_thread.run_sync(stored)
            if done is not None:
                return done, True
        renewing = asyncio.create_task(self._renew_lease(key))
        try:
            done = await to_thread.run_sync(stored)
            if done is not None:
                return done, True
            return await compute(), False
        finally:
            renewing.cancel()
            await to_thread.run_sync(store.release, key, self._owner)

    async def _renew_lease(self, key: str) -> None:
        """Keep this process's lease on ``key`` alive until cancelled."""
        store = self.results
        while True:
            await asyncio.sleep(store.lease_renew_s)
            try:
                renewed = await to_thread.run_sync(
                    store.renew_lease, key, self._owner, store.lease_ttl_s
                )
            except StorageError:
                continue  # the store is away for a while (Redis restarting): renew again
            if not renewed:
                logger.warning("lost the lease on %s: another process may compute it too", key)

    async def run_steps(
        self,
        dataset: DatasetInfo,
        steps: Sequence[Step[T]],
        spent: Callable[[T], float],
        report: Progress,
        *,
        alike: str,
    ) -> list[T]:
        """The steps on the executor, their results in order, within one timeout for
        them all.

        As many steps share a task as the pace (seconds per unit of :attr:`Step.weight`,
        timed in the worker, so the same under load) says take :data:`BATCH_S` together,
        and at most twice as many as the task before took: a question of many quick steps
        (a sweep on small data) pays few round trips (about 1 ms each on the local pool,
        6 ms on Dask, and 15-18 ms of its CPU when it is busy), and its progress still
        moves about every :data:`BATCH_S`. The pace is the last task's; before the
        first, the last computation's alike (:class:`Pace`: the same data, step function
        and ``alike``, what the steps' cost depends on beyond their weight, such as
        :func:`service.params.pace_form`), if any: with none, the first step is a task of
        its own. Each step's result is its own, its fit timed alone.

        Small data's steps run on one thread each (:func:`service.threads.is_small`), so
        up to :attr:`Executor.lanes` of its tasks run at once, on as many workers (the
        digits benchmark's three strategies: 94 ms in one process, 75 ms over HTTP on
        two workers), a task taking no more than its lane's share of the weight left;
        but not the lanes this process's other computations are stepping on, looked at
        each round (replicas sharing a cluster each see their own), so under a burst its
        steps share one lane's tasks from the first (16 digits benchmarks at once on two
        Dask workers: 48 tasks, 16 now). A larger question's fits use every thread of
        their worker, and its tasks go one after another.

        ``report(done, total, stage)`` hears each task's start, its first step's label
        as the stage. The budget is spent by the work itself as ``spent`` reads it from
        a step's result (the fit times, measured in the workers), not by the time a task
        waits in the queue behind other computations' tasks.
        """
        if not steps:
            return []
        left = self.executor.timeout_s
        small = threads.is_small((dataset.n_samples, dataset.n_features))
        paced = (dataset.id, getattr(steps[0].fn, "__qualname__", "step"), alike)
        # seconds per unit of weight, in the worker, and the steps of the task before:
        # a task takes at most twice as many
        pace, size = self._paces.get(paced, Pace())
        measured = Pace(0.0, 0)  # this computation's: its seconds in all, its largest task
        results: list[T] = []
        running: list[tuple[Handle[Turn[T]], float]] = []  # tasks in order, their weight
        started = 0  # steps submitted
        total = sum(step.weight for step in steps)
        rest = total  # the weight of the steps not yet submitted
        self._stepping += 1
        try:
            while len(results) < len(steps):
                lanes = max(1, self.executor.lanes - self._stepping + 1) if small else 1
                while len(running) < lanes and started < len(steps):
                    report(len(results), len(steps), steps[started].stage)
                    if left <= 0:
                        raise timed_out(self.executor.timeout_s)
                    share = rest / (lanes - len(running))
                    batch = [steps[started]]
                    work = batch[0].weight
                    for step in steps[started + 1 : started + 2 * size]:
                        if (work + step.weight) * pace > BATCH_S or work + step.weight > share:
                            break
                        batch.append(step)
                        work += step.weight
                    calls = [(step.fn, step.args) for step in batch]
                    running.append((submit_in_turn(self.executor, calls, timeout_s=left), work))
                    started += len(batch)
                    rest -= work
                task, work = running[0]
                try:
                    out = await task
                except FileNotFoundError:
                    raise DatasetNotFoundError(
                        f"the dataset {dataset.id} was deleted while this computation was queued"
                    ) from None
                running.pop(0)
                # The steps' own time in the worker: under load a task also waits in the
                # queue behind other computations' tasks, and that wait says nothing of them.
                pace = out.seconds / work
                size = len(out)
                measured = Pace(measured.seconds + out.seconds, max(measured.steps, size))
                results.extend(out)
                left -= sum(spent(result) for result in out)
        finally:
            self._stepping -= 1
            for task, _ in running:
                self.executor.cancel(task)
        keep_recent(self._paces, paced, Pace(measured.seconds / total, measured.steps), PACES_KEPT)
        return results

    async def _admitted(
        self, key: str, work: Coroutine[Any, Any, T], *, executor: bool = False
    ) -> T:
        """``work`` counted against the pool's bound from its start (the executor's, for
        the fits of benchmarks, sweeps and stability runs, which may run on a cluster).

        Under a burst the refusal (503) comes at once, before the lease and the store
        are touched (it came after 2-5 s when only the pool's submit counted).
        """
        gate = self.executor if executor else self.pool
        try:
            with gate.admitted():
                return await self.failures.guard(key, work)
        finally:
            work.close()  # never started when refused: no "never awaited" warning

    def _flight(self, key: str, start: Callable[[], Coroutine[Any, Any, T]]) -> asyncio.Task[T]:
        """The computation in flight under ``key``, started unless it already runs."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(start())
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return task

    async def _once(self, key: str, start: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Await the computation under ``key``, starting it unless it already runs."""
        task = self._flight(key, start)
        # shield: one waiter giving up must not cancel the computation the others await.
        try:
            result: T = await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and not (current and current.cancelling()):
                # Not this waiter: the computation itself was cancelled (DELETE of its job).
                raise ComputeCancelledError(
                    "the computation of this request was cancelled (its job was deleted) "
                    "before it finished; ask again to compute it"
                ) from None
            raise
        return result

    def _follow(
        self, key: str, start: Callable[[], Coroutine[Any, Any, T]], progress: Progress
    ) -> asyncio.Task[T]:
        """The computation under ``key`` (see :meth:`_flight`), ``progress`` hearing its
        steps until it ends."""
        task = self._flight(key, start)
        listeners = self._listeners.setdefault(key, [])
        listeners.append(progress)

        def unlisten(_: object) -> None:
            listeners.remove(progress)
            if not listeners and self._listeners.get(key) is listeners:
                del self._listeners[key]

        task.add_done_callback(unlisten)
        return task

    def _report(self, key: str, done: int, total: int, stage: str) -> None:
        for listener in self._listeners.get(key, ()):
            listener(done, total, stage)
