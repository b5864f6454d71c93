"""The life of a job: a question computed in the background, with progress and cancel.

A job is a record (:mod:`service.job_records`: its own SQLite file, or Redis) that
outlives the process that runs it: after a restart a queued or running job whose
process is gone is run again (or failed with the reason why it cannot be). Identical
questions join one job. Nothing here knows HTTP; every store call runs in a thread.

A job computes a question of one of :data:`service.questions.KINDS` (a benchmark, a
sweep, a stability run). The computation itself is the question's (one executor task
per step, shared with synchronous requests for the same question); the runner here
follows its steps, records them, and tells whoever watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import math
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from service import compute
from service.engine import BenchmarkEngine
from service.errors import (
    ComputeBusyError,
    JobFinishedError,
    JobOrphanedError,
    ServiceError,
    StorageError,
    StoreUnavailableError,
    TenantBusyError,
)
from service.job_records import (
    CANCELLED,
    HEARTBEAT_S,
    UNEXPECTED,
    WITHDRAWN,
    JobBackend,
    JobRecord,
    owner_alive,
    problem_of,
)
from service.questions import KINDS, Question
from service.schemas import ACTIVE_STATES, FINISHED_STATES, JobState

logger = logging.getLogger(__name__)


# Seconds between two tries of a queued job to get a place in a full compute pool.
ADMISSION_POLL_S = 0.2
# Seconds between two looks at the store by a watcher of a job run by another process.
WATCH_POLL_S = 0.5
# Seconds between two looks of a runner at its job's record: a DELETE answered by another
# process on the same directory marks the record cancelled, and the runner stops.
RECORD_POLL_S = 1.0
# Seconds between two sweeps for the jobs of processes that stopped while this one runs.
SWEEP_S = 30.0


@dataclass
class JobStats:
    """Counters read by the metrics collector."""

    finished: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISHED_STATES, 0))
    # Durations (created to finished) of the jobs that ended, in histogram buckets.
    buckets: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)
    bucket_counts: list[int] = field(default_factory=lambda: [0] * 12)
    duration_sum: float = 0.0

    def recount(self, was: JobState, state: JobState) -> None:
        """A job counted as ending in ``was`` ended in ``state`` after all."""
        self.finished[was] -= 1
        self.finished[state] += 1

    def observe(self, state: JobState, seconds: float) -> None:
        self.finished[state] += 1
        self.duration_sum += seconds
        for i, bound in enumerate(self.buckets):
            if seconds <= bound:
                self.bucket_counts[i] += 1
                return
        self.bucket_counts[-1] += 1


@dataclass
class _Running:
    """A job this process runs: its record, its runner task, and who to wake on change."""

    job: JobRecord
    question: Question | None  # None for a job that cannot run again
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None
    cancel_requested: bool = False
    tenant: str | None = None  # who asked first; its computation counts against its share
    # Record writes in flight: held here, since the event loop keeps only weak references.
    writes: set[asyncio.Task[None]] = field(default_factory=set)


class _Turns:
    """Queued jobs take the pool's free places in turns across tenants.

    One job tries at a time: the oldest of the tenant whose turn it is. Admitted, its
    tenant goes to the back of the round; refused at its tenant's share, the next tenant
    tries; refused by a full pool, all wait ``ADMISSION_POLL_S`` and the same tenant
    tries first. Before, each job polled on its own, and one tenant's hundred queued jobs
    took nearly every place that freed.
    """

    def __init__(self) -> None:
        self._waiting: dict[str | None, deque[asyncio.Future[None]]] = {}
        self._trying = False
        self._skipped: set[str | None] = set()
        self._paused: asyncio.TimerHandle | None = None

    async def wait(self, tenant: str | None, *, again: bool = False) -> None:
        """Until it is this job's turn to try for a place (``again``: it was refused,
        it keeps its place at the head of its tenant's line)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line = self._waiting.setdefault(tenant, deque())
        if again:
            line.appendleft(future)
        else:
            line.append(future)
        self._next()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.tried(tenant, "cancelled")  # its turn came with the cancel: pass it on
            elif future in line:
                line.remove(future)
                if not line and self._waiting.get(tenant) is line:
                    del self._waiting[tenant]
            raise

    def tried(self, tenant: str | None, outcome: str) -> None:
        """The job whose turn it was has tried: ``admitted``, refused at its tenant's
        ``share``, refused by a ``full`` pool, or ``cancelled``."""
        self._trying = False
        if outcome == "admitted":
            line = self._waiting.pop(tenant, None)
            if line:
                self._waiting[tenant] = line  # the back of the round
        elif outcome == "share":
            self._skipped.add(tenant)
        elif outcome == "full":
            self._pause()
        self._next()

    def _pause(self) -> None:
        if self._paused is None:
            self._paused = asyncio.get_running_loop().call_later(ADMISSION_POLL_S, self._resume)

    def _resume(self) -> None:
        self._paused = None
        self._skipped.clear()
        self._next()

    def _next(self) -> None:
        if self._trying or self._paused is not None:
            return
        for tenant, line in list(self._waiting.items()):
            while line and line[0].done():
                line.popleft()  # cancelled while waiting
            if not line:
                del self._waiting[tenant]
                continue
            if tenant in self._skipped:
                continue
            line.popleft().set_result(None)
            self._trying = True
            return
        if self._waiting:
            self._pause()  # every tenant waiting holds its share: until places free


class JobManager:
    """Starts, follows, lists and cancels jobs; owns their runner tasks.

    Parameters
    ----------
    store : JobBackend
        Where the records live (SQLite, or Redis shared by replicas).
    engine : BenchmarkEngine
        What computes (and shares a computation with synchronous requests).
    max_active : int
        Jobs this process queues or runs at once; more are refused (ComputeBusyError).
    tenant_max_active : int or None
        Jobs one tenant queues or runs at once in this process; more are refused
        (TenantBusyError). None: no bound per tenant.
    """

    def __init__(
        self,
        store: JobBackend,
        engine: BenchmarkEngine,
        *,
        max_active: int,
        tenant_max_active: int | None = None,
        retention_s: float = 7 * 24 * 3600,
        on_pruned: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.max_active = max_active
        self.tenant_max_active = tenant_max_active
        self.retention_s = retention_s
        self.on_pruned = on_pruned
        self.owner = f"{engine.owner}@{socket.gethostname()}"
        self.stats = JobStats()
        self.watchers = 0
        self._active: dict[str, _Running] = {}
        self._by_key: dict[str, _Running] = {}
        # Jobs being created (their record written): counted against the bounds already.
        self._submitting: dict[str | None, int] = {}
        self._turns = _Turns()
        self._sweeper: asyncio.Task[None] | None = None

    # -- counts, for the metrics ----------------------------------------------------

    def count(self, state: JobState) -> int:
        return sum(1 for running in self._active.values() if running.job.state == state)

    def _alive(self, job: JobRecord) -> bool:
        return owner_alive(job, self.owner)

    # -- starting ---------------------------------------------------------------------

    async def submit(self, question: Question, tenant: str | None = None) -> JobRecord:
        """The job computing ``question``: the one already queued or running, or a new one
        (``tenant``'s, which asks it).

        Raises the failure remembered for the question (as a synchronous request would
        get it), ComputeBusyError when this process runs ``max_active`` jobs already, or
        TenantBusyError when ``tenant`` has ``tenant_max_active`` jobs here already.
        """
        running = self._by_key.get(question.id)
        if running is not None:
            return copy.copy(running.job)
        self.engine.failures.check(question.flight)
        if len(self._active) + sum(self._submitting.values()) >= self.max_active:
            raise ComputeBusyError(
                f"this server already runs {self.max_active} jobs "
                "(CLUSTERBENCH_MAX_JOBS); try again later",
                retry_after=5,
            )
        self._check_tenant_share(tenant)
        self._submitting[tenant] = self._submitting.get(tenant, 0) + 1
        try:
            job, created = await asyncio.to_thread(
                self.store.create_or_join,
                kind=question.kind,
                key=question.id,
                request=question.record(),
                total=question.steps,
                owner=self.owner,
                alive=self._alive,
            )
        finally:
            self._submitting[tenant] -= 1
            if not self._submitting[tenant]:
                del self._submitting[tenant]
        if created:
            self._start(job, question, tenant)
        return job

    def _check_tenant_share(self, tenant: str | None) -> None:
        """Refuse a new job of a tenant that has ``tenant_max_active`` jobs already."""
        if tenant is None or self.tenant_max_active is None:
            return
        mine = [r for r in self._active.values() if r.tenant == tenant]
        if len(mine) + self._submitting.get(tenant, 0) < self.tenant_max_active:
            return
        # Until the first of its running jobs ends: its steps left, at the measured pace.
        running = [r.job.total - r.job.done for r in mine if r.job.state == JobState.RUNNING]
        steps = min(running, default=max((r.job.total for r in mine), default=1))
        raise TenantBusyError(
            f"tenant {tenant!r} already has {len(mine)} jobs queued or running on this server, "
            f"its share (CLUSTERBENCH_TENANT_MAX_JOBS={self.tenant_max_active}); try again "
            "once one has ended",
            retry_after=max(1, math.ceil(steps * self.engine.executor.task_s)),
        )

    def _start(self, job: JobRecord, question: Question, tenant: str | None = None) -> None:
        running = _Running(job=job, question=question, tenant=tenant)
        self._active[job.id] = running
        self._by_key[job.key] = running
        running.task = asyncio.create_task(self._run(running), name=f"job {job.id}")

    async def _run(self, running: _Running) -> None:
        job = running.job
        question = running.question
        assert question is not None

        def progress(done: int, total: int, stage: str) -> None:
            if job.is_finished:
                return
            if job.state == JobState.QUEUED:
                job.state = JobState.RUNNING
                job.started = time.time()
            # After a restart the steps are counted again from 0: done never goes back.
            job.done, job.total, job.stage = max(job.done, done), total, stage
            self._changed(running)
            write = asyncio.create_task(self._persist(running))
            running.writes.add(write)
            write.add_done_callback(running.writes.discard)
            write.add_done_callback(_log_failure)

        # Its computation counts against its tenant's share of the pools.
        compute.tenant.set(running.tenant)
        follower = asyncio.create_task(self._follow_record(running))
        try:
            while True:
                try:
                    async with self._place(running):
                        await question.computation(self.engine, progress)
                    break
                except ComputeBusyError:
                    # A place taken, but a pool further on full: queued again.
                    await asyncio.sleep(ADMISSION_POLL_S)
        except asyncio.CancelledError:
            if not running.cancel_requested:
                # The server is stopping: the record stays active, and the job is run
                # again when a server starts on this directory.
                self._forget(running)
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            await self._finish(running, JobState.CANCELLED, error=CANCELLED)
        except StoreUnavailableError as exc:
            # The result's write may have reached Redis although its answer did not: a
            # frozen Redis runs what it received once it wakes. Looked at once it answers.
            await self._finish(running, JobState.FAILED, error=problem_of(exc), unless_stored=True)
        except ServiceError as exc:
            await self._finish(running, JobState.FAILED, error=problem_of(exc))
        except Exception:
            logger.exception("job %s failed unexpectedly", job.id)
            await self._finish(running, JobState.FAILED, error=UNEXPECTED)
        else:
            job.done = job.total
            job.stage = "done"
            await self._finish(running, JobState.SUCCEEDED)
        finally:
            follower.cancel()

    @contextlib.asynccontextmanager
    async def _place(self, running: _Running) -> AsyncIterator[None]:
        """A place in the pool for the job's computation, taken in its tenant's turn;
        the computation started inside is counted there, once."""
        again = False
        while True:
            await self._turns.wait(running.tenant, again=again)
            again = True
            place = contextlib.ExitStack()
            try:
                place.enter_context(self.engine.executor.admitted())
            except TenantBusyError:
                self._turns.tried(running.tenant, "share")
                continue
            except ComputeBusyError:
                self._turns.tried(running.tenant, "full")
                continue
            except BaseException:
                self._turns.tried(running.tenant, "full")
                raise
            self._turns.tried(running.tenant, "admitted")
            with place:
                yield
            return

    async def _follow_record(self, running: _Running) -> None:
        """Keep the job's heartbeat, and stop the runner when another process has
        cancelled the job's record."""
        last_beat = 0.0
        while True:
            await asyncio.sleep(RECORD_POLL_S)
            try:
                if time.monotonic() - last_beat >= HEARTBEAT_S:
                    state = await asyncio.to_thread(self.store.beat, running.job.id, self.owner)
                    last_beat = time.monotonic()
                    if state is None:
                        # The record is gone (Redis restarted without its append-only
                        # file): written again, so that clients see the job meanwhile.
                        logger.warning("job %s had lost its record: written again", running.job.id)
                        await self._persist(running)
                        continue
                else:
                    record = await asyncio.to_thread(self.store.get, running.job.id)
                    state = None if record is None else record.state
                    taken = record is not None and record.owner != self.owner
                    if taken and state in ACTIVE_STATES:
                        # Taken over (this process's heartbeat went stale): the new owner
                        # runs it; stop here, leaving the record as it is.
                        logger.warning("job %s was taken over: stopped here", running.job.id)
                        if running.task is not None:
                            running.task.cancel()
                        return
            except StorageError:
                continue  # the store is away for a while (Redis restarting): look again
            if state == JobState.CANCELLED and not running.cancel_requested:
                logger.info("job %s was cancelled by another process", running.job.id)
                running.cancel_requested = True
                if running.task is not None:
                    running.task.cancel()
                return

    async def _finish(
        self,
        running: _Running,
        state: JobState,
        *,
        error: dict[str, Any] | None = None,
        unless_stored: bool = False,
    ) -> None:
        """End the job in ``state``; with ``unless_stored``, as succeeded instead if its
        result turns out to be stored once the store answers."""
        job = running.job
        job.state = state
        job.error = error
        job.finished = time.time()
        if job.started is None and state == JobState.SUCCEEDED:
            job.started = job.finished
        self.stats.observe(state, job.finished - job.created)
        try:
            await self._persist_end(running, unless_stored=unless_stored)
        finally:
            self._forget(running)
            self._changed(running)

    async def _persist_end(self, running: _Running, *, unless_stored: bool) -> None:
        """Write the job's end, waiting for a store that is away (Redis restarting):
        unwritten, the record would say "running" for ever, owned by a live process."""
        delay = 0.2
        while True:
            try:
                if unless_stored and await self._stored_after_all(running):
                    job = running.job
                    logger.warning("job %s: its result was stored after all", job.id)
                    self.stats.recount(job.state, JobState.SUCCEEDED)
                    job.state, job.error, job.done, job.stage = (
                        JobState.SUCCEEDED,
                        None,
                        job.total,
                        "done",
                    )
                    if job.started is None:
                        job.started = job.finished
                    self._changed(running)
                unless_stored = False
                await self._persist(running)
                return
            except StorageError as exc:
                logger.warning("job %s ended but its record waits: %s", running.job.id, exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)

    async def _stored_after_all(self, running: _Running) -> bool:
        """Whether the job's question has its result stored. Asked twice: Redis may
        answer the first request before it has run a write it had received on another
        connection while frozen; it answers the second, sent after, only after that."""
        question = running.question
        if question is None:
            return False
        await question.stored(self.engine)
        return await question.stored(self.engine)

    def _forget(self, running: _Running) -> None:
        self._active.pop(running.job.id, None)
        if self._by_key.get(running.job.key) is running:
            del self._by_key[running.job.key]

    def _changed(self, running: _Running) -> None:
        event, running.changed = running.changed, asyncio.Event()
        event.set()

    async def _persist(self, running: _Running) -> None:
        """Write the job's latest state; writes follow one another in order."""
        async with running.lock:
            snapshot = copy.copy(running.job)
            written = await asyncio.to_thread(self.store.save, snapshot)
        if not written and not snapshot.is_finished and not running.cancel_requested:
            # Another process cancelled the record: stop the computation here too.
            logger.info("job %s was cancelled by another process", snapshot.id)
            running.cancel_requested = True
            if running.task is not None:
                running.task.cancel()

    # -- reading ----------------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord | None:
        running = self._active.get(job_id)
        if running is not None:
            return copy.copy(running.job)
        return await self._from_store(job_id)

    async def _from_store(self, job_id: str) -> JobRecord | None:
        """The job's record; an active one whose process is gone is taken over first (run
        again here), so that a client asking another replica sees it complete without
        waiting for the sweep (SWEEP_S)."""
        job = await asyncio.to_thread(self.store.get, job_id)
        if job is not None and not job.is_finished and not self._alive(job):
            await self.recover()
            running = self._active.get(job_id)
            if running is not None:
                return copy.copy(running.job)
            job = await asyncio.to_thread(self.store.get, job_id)
        return job

    async def page(
        self,
        *,
        state: JobState | None,
        limit: int,
        before: int | None,
        among: Sequence[str] | None = None,
    ) -> list[JobRecord]:
        jobs = await asyncio.to_thread(
            functools.partial(self.store.page, state=state, limit=limit, before=before, among=among)
        )
        # This process's running jobs: their progress as of now, not as last written.
        return [copy.copy(self._active[j.id].job) if j.id in self._active else j for j in jobs]

    async def watch(self, job_id: str) -> AsyncIterator[JobRecord]:
        """The job now, then each time it changes, until it has finished."""
        self.watchers += 1
        try:
            last = None
            while True:
                running = self._active.get(job_id)
                if running is not None:
                    job: JobRecord | None = copy.copy(running.job)
                    changed: asyncio.Event | None = running.changed
                else:
                    try:
                        job, changed = await self._from_store(job_id), None
                    except StorageError:
                        if last is None:
                            raise  # nothing sent yet: the client gets the 503
                        # Streaming already (Redis restarting): look again, as runners do.
                        await asyncio.sleep(WATCH_POLL_S)
                        continue
                if job is None:
                    return
                if job.snapshot() != last:
                    last = job.snapshot()
                    yield job
                if job.is_finished:
                    return
                if changed is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), timeout=5.0)
                else:
                    await asyncio.sleep(WATCH_POLL_S)
        finally:
            self.watchers -= 1

    # -- cancelling -------------------------------------------------------------------

    async def cancel(self, job_id: str) -> JobRecord | None:
        """Cancel the job: its computation stops and its worker's CPU is freed.

        Returns the job as it is then (None when there is no such job). Raises
        JobFinishedError for a job that has finished or is storing its result.
        """
        running = self._active.get(job_id)
        if running is None:
            return await self._cancel_elsewhere(job_id)
        if running.job.is_finished:
            # Finished in memory, its record being written: the runner must not be
            # cancelled now, or the record would stay active.
            raise JobFinishedError(
                f"job {job_id} has already {running.job.state}: nothing to cancel"
            )
        if running.job.stage == "storing":
            raise JobFinishedError(
                f"job {job_id} has computed its result and is storing it: too late to cancel"
            )
        running.cancel_requested = True
        task = running.task
        if task is not None:
            task.cancel()
            # Until its worker is stopped and the record written; not for ever.
            await asyncio.wait({task}, timeout=10)
        return copy.copy(running.job)

    async def withdraw(
        self, job_id: str, release: Callable[[], Awaitable[None]]
    ) -> JobRecord | None:
        """One of several tenants waiting for a job leaves it: ``release`` drops its claim,
        the computation goes on for the others. Returns the job as the leaver last sees
        it, cancelled (None when there is no such job). Raises JobFinishedError for a job
        that has finished, as :meth:`cancel` does."""
        job = await self.get(job_id)
        if job is None:
            return None
        if job.is_finished:
            raise JobFinishedError(f"job {job_id} has already {job.state}: nothing to cancel")
        await release()
        job.state, job.stage, job.finished = JobState.CANCELLED, "cancelled", time.time()
        job.error = WITHDRAWN
        return job

    async def _cancel_elsewhere(self, job_id: str) -> JobRecord | None:
        """A job run by another process (or by none): mark its record cancelled; its
        runner sees it at its next step and stops."""
        job = await asyncio.to_thread(self.store.get, job_id)
        if job is None:
            return None
        if job.is_finished:
            raise JobFinishedError(f"job {job_id} has already {job.state}: nothing to cancel")
        job.state = JobState.CANCELLED
        job.finished = time.time()
        job.error = CANCELLED
        if not await asyncio.to_thread(self.store.save, job):
            again = await asyncio.to_thread(self.store.get, job_id)
            state = again.state if again is not None else "ended"
            raise JobFinishedError(f"job {job_id} has already {state}: nothing to cancel")
        return job

    # -- start-up and shut-down -------------------------------------------------------

    async def start(self) -> int:
        """Take over the jobs of processes that are gone, and remove those past their
        retention, now and every ``SWEEP_S`` (another process on the directory may stop
        while this one runs). Returns how many were taken now."""
        try:
            taken = await self.recover()
            await self.prune()
        except StorageError as exc:
            # A read-only or full data directory: served as 503/507 until it takes writes;
            # the sweep takes the jobs over then.
            logger.error("jobs of stopped processes not taken over yet: %s", exc.detail)
            taken = 0
        self._sweeper = asyncio.create_task(self._sweep())
        return taken

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.recover()
            except Exception:
                logger.exception("the sweep for jobs of stopped processes failed")
            try:
                await self.prune()
            except Exception:
                logger.exception("the sweep for jobs past their retention failed")

    async def prune(self) -> int:
        """Remove the jobs that finished more than ``retention_s`` ago (their results
        stay in the cache); returns how many went."""
        before = time.time() - self.retention_s
        pruned = 0
        while ids := await asyncio.to_thread(self.store.prune, before):
            pruned += len(ids)
            if self.on_pruned is not None:
                await self.on_pruned(ids)
        if pruned:
            logger.info("removed %d jobs finished over %g s ago", pruned, self.retention_s)
        return pruned

    async def recover(self) -> int:
        """Take over the active jobs of processes that are gone: run each again, or
        mark it failed with the reason it cannot be. Returns how many were taken."""
        taken = 0
        for job in await asyncio.to_thread(self.store.orphans, self._alive):
            if not await asyncio.to_thread(self.store.claim, job.id, job.owner, self.owner):
                continue  # another process took it
            taken += 1
            lease_owner = job.owner.partition("@")[0]
            old_owner, job.owner = job.owner, self.owner
            try:
                question = await asyncio.to_thread(self._rebuild, job)
            except ServiceError as exc:
                running = _Running(job=job, question=None)
                self._active[job.id] = running
                await self._finish(running, JobState.FAILED, error=problem_of(exc))
                logger.warning("job %s of stopped process %s failed: %s", job.id, old_owner, exc)
                continue
            job.stage = "queued"
            if job.state == JobState.RUNNING:
                job.state = JobState.QUEUED
            # The gone process's lease on the question would hold it for minutes.
            await asyncio.to_thread(self.engine.results.release, question.flight, lease_owner)
            logger.warning("job %s of stopped process %s runs again", job.id, old_owner)
            self._start(job, question)
        return taken

    def _rebuild(self, job: JobRecord) -> Question:
        """The question a stored job asks, checked to be the same question still."""
        kind = KINDS.get(job.kind)
        if kind is None:
            raise JobOrphanedError(
                f"the server restarted while this job was queued or running, and this "
                f"version of the service does not know its kind {job.kind!r}: ask again"
            )
        try:
            return kind.rebuild(self.engine, job.key, job.request)
        except (KeyError, TypeError, ValueError):
            raise JobOrphanedError(
                "the server restarted while this job was queued or running, and its stored "
                "request cannot be read by this version of the service: ask again"
            ) from None

    async def close(self) -> None:
        """Stop the runners and hand their jobs over (the server is stopping).

        Each unfinished job's record is released (:meth:`JobBackend.release`): queued,
        with no owner and no heartbeat, so another process takes it over and runs it again
        at once, rather than once this process's heartbeat is stale (``STALE_S``).
        """
        if self._sweeper is not None:
            self._sweeper.cancel()
        stopping = list(self._active.values())
        tasks = [r.task for r in stopping if r.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        # A progress write still in flight would land after the release and undo it.
        writes = [write for running in stopping for write in running.writes]
        if writes:
            await asyncio.wait(writes, timeout=10)
        for running in stopping:
            if running.job.is_finished:
                continue  # its end is written (or being written) by _finish
            try:
                released = await asyncio.to_thread(self.store.release, running.job.id, self.owner)
            except StorageError as exc:
                logger.warning("job %s not handed over: %s", running.job.id, exc)
                continue
            if released:
                logger.info("job %s handed over: another process runs it", running.job.id)
        self.store.close()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("a job record could not be written", exc_info=task.exception())
