"""The life of a job: a question computed in the background, with progress and cancel.

A job is a record (:mod:`service.jobs.records`: its own SQLite file, or Redis) that
outlives the process that runs it: after a restart a queued or running job whose
process is gone is run again (or failed with the reason why it cannot be). Identical
questions join one job. Nothing here knows HTTP; every store call runs in a thread.

A job computes a question of one of :data:`service.questions.KINDS` (a benchmark, a
sweep, a stability run). The computation itself is the question's (steps on the
executor, several to a task where they are quick, shared with synchronous requests for
the same question); the runner here
follows its steps, records them, and tells whoever watches
(:mod:`service.jobs.runner`); queued jobs take free places in turns across tenants
(:mod:`service.jobs.turns`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from service.engine import BenchmarkEngine
from service.errors import (
    ComputeBusyError,
    JobFinishedError,
    JobOrphanedError,
    ServiceError,
    StorageError,
    TenantBusyError,
)
from service.jobs.records import (
    CANCELLED,
    WITHDRAWN,
    JobBackend,
    JobQuery,
    JobRecord,
    owner_alive,
    problem_of,
)
from service.jobs.runner import JobRunner, JobStats, Running
from service.questions import KINDS, Question
from service.schemas import JobState

logger = logging.getLogger(__name__)


# Seconds between two looks at the store by a watcher of a job run by another process.
WATCH_POLL_S = 0.5
# Seconds between two sweeps for the jobs of processes that stopped while this one runs.
SWEEP_S = 30.0


def _ended(job_id: str, state: str) -> JobFinishedError:
    """What cancelling a job that has ended (in ``state``) raises."""
    return JobFinishedError(f"job {job_id} has already {state}: nothing to cancel")


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
        self._active: dict[str, Running] = {}
        self._by_key: dict[str, Running] = {}
        # Jobs being created (their record written): counted against the bounds already.
        self._submitting: dict[str | None, int] = {}
        self.runner = JobRunner(store, engine, self.owner, self.stats, forget=self._forget)
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
        # A job that has ended is not joined, though it stays here while its end is
        # written: asked again, the question gets its remembered problem or a new job.
        if running is not None and not running.job.is_finished:
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
        running = Running(job=job, question=question, tenant=tenant)
        self._active[job.id] = running
        self._by_key[job.key] = running
        running.task = asyncio.create_task(self.runner.run(running), name=f"job {job.id}")

    def _forget(self, running: Running) -> None:
        self._active.pop(running.job.id, None)
        if self._by_key.get(running.job.key) is running:
            del self._by_key[running.job.key]

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

    async def page(self, query: JobQuery) -> list[JobRecord]:
        jobs = await asyncio.to_thread(self.store.select, query)
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
            raise _ended(job_id, running.job.state)
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
            raise _ended(job_id, job.state)
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
            raise _ended(job_id, job.state)
        job.state = JobState.CANCELLED
        job.finished = time.time()
        job.error = CANCELLED
        if not await asyncio.to_thread(self.store.save, job):
            again = await asyncio.to_thread(self.store.get, job_id)
            state = again.state if again is not None else "ended"
            raise _ended(job_id, state)
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
                running = Running(job=job, question=None)
                self._active[job.id] = running
                await self.runner.finish(running, JobState.FAILED, error=problem_of(exc))
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
        for running in stopping:
            # A finished job's runner is writing its end: cancelled, the record would say
            # "running" after the stop (the write ran on in its thread, unwaited for).
            if running.task is not None and not running.job.is_finished:
                running.task.cancel()
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
