"""One job's run in this process: its computation in its tenant's turn, its progress
written to its record, its heartbeat, and its end, whatever ends it."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from service import compute
from service.engine import BenchmarkEngine
from service.errors import (
    ComputeBusyError,
    ServiceError,
    StorageError,
    StoreUnavailableError,
    TenantBusyError,
)
from service.jobs.records import (
    CANCELLED,
    HEARTBEAT_S,
    UNEXPECTED,
    JobBackend,
    JobRecord,
    problem_of,
)
from service.jobs.turns import ADMISSION_POLL_S, Turns
from service.questions import Question
from service.schemas import ACTIVE_STATES, FINISHED_STATES, JobState

logger = logging.getLogger(__name__)

# Seconds between two looks of a runner at its job's record: a DELETE answered by another
# process on the same directory marks the record cancelled, and the runner stops.
RECORD_POLL_S = 1.0


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
class Running:
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

    def wake(self) -> None:
        """Tell whoever watches that the job changed."""
        event, self.changed = self.changed, asyncio.Event()
        event.set()


@dataclass
class JobRunner:
    """Runs the jobs of one :class:`service.jobs.manager.JobManager`: what they share
    (the store, the engine, this process's name, the counters, the turns), and how a
    finished run leaves the manager's tables (``forget``)."""

    store: JobBackend
    engine: BenchmarkEngine
    owner: str
    stats: JobStats
    forget: Callable[[Running], None]
    turns: Turns = field(default_factory=Turns)

    async def run(self, running: Running) -> None:
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
            running.wake()
            write = asyncio.create_task(self.persist(running))
            running.writes.add(write)
            write.add_done_callback(running.writes.discard)
            write.add_done_callback(_log_failure)

        # Its computation counts against its tenant's share of the pools.
        compute.tenant.set(running.tenant)
        follower = asyncio.create_task(self.follow_record(running))
        try:
            while True:
                try:
                    async with self.place(running):
                        await question.computation(self.engine, progress)
                    break
                except ComputeBusyError:
                    # A place taken, but a pool further on full: queued again.
                    await asyncio.sleep(ADMISSION_POLL_S)
        except asyncio.CancelledError:
            if not running.cancel_requested:
                # The server is stopping: the record stays active, and the job is run
                # again when a server starts on this directory.
                self.forget(running)
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            await self.finish(running, JobState.CANCELLED, error=CANCELLED)
        except StoreUnavailableError as exc:
            # The result's write may have reached Redis although its answer did not: a
            # frozen Redis runs what it received once it wakes. Looked at once it answers.
            await self.finish(running, JobState.FAILED, error=problem_of(exc), unless_stored=True)
        except ServiceError as exc:
            await self.finish(running, JobState.FAILED, error=problem_of(exc))
        except Exception:
            logger.exception("job %s failed unexpectedly", job.id)
            await self.finish(running, JobState.FAILED, error=UNEXPECTED)
        else:
            job.done = job.total
            job.stage = "done"
            await self.finish(running, JobState.SUCCEEDED)
        finally:
            follower.cancel()

    @contextlib.asynccontextmanager
    async def place(self, running: Running) -> AsyncIterator[None]:
        """A place in the pool for the job's computation, taken in its tenant's turn;
        the computation started inside is counted there, once."""
        again = False
        while True:
            await self.turns.wait(running.tenant, again=again)
            again = True
            place = contextlib.ExitStack()
            try:
                place.enter_context(self.engine.executor.admitted())
            except TenantBusyError:
                self.turns.tried(running.tenant, "share")
                continue
            except ComputeBusyError:
                self.turns.tried(running.tenant, "full")
                continue
            except BaseException:
                self.turns.tried(running.tenant, "full")
                raise
            self.turns.tried(running.tenant, "admitted")
            with place:
                yield
            return

    async def follow_record(self, running: Running) -> None:
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
                        await self.persist(running)
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

    async def finish(
        self,
        running: Running,
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
            await self.persist_end(running, unless_stored=unless_stored)
        finally:
            self.forget(running)
            running.wake()

    async def persist_end(self, running: Running, *, unless_stored: bool) -> None:
        """Write the job's end, waiting for a store that is away (Redis restarting):
        unwritten, the record would say "running" for ever, owned by a live process."""
        delay = 0.2
        while True:
            try:
                if unless_stored and await self.stored_after_all(running):
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
                    running.wake()
                unless_stored = False
                await self.persist(running)
                return
            except StorageError as exc:
                logger.warning("job %s ended but its record waits: %s", running.job.id, exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)

    async def stored_after_all(self, running: Running) -> bool:
        """Whether the job's question has its result stored. Asked twice: Redis may
        answer the first request before it has run a write it had received on another
        connection while frozen; it answers the second, sent after, only after that."""
        question = running.question
        if question is None:
            return False
        await question.stored(self.engine)
        return await question.stored(self.engine)

    async def persist(self, running: Running) -> None:
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


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("a job record could not be written", exc_info=task.exception())
