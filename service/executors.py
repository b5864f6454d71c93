"""Where computations run: one small interface, the local process pool behind it.

The engine and the job runner only ``submit`` a worker function, await its handle, and
``cancel`` it; progress is reported by the job runner between tasks, so an executor knows
nothing of jobs. :class:`LocalExecutor` runs tasks in this process's
:class:`~service.compute.ComputePool`; :class:`DaskExecutor` runs them on a Dask cluster
(``CLUSTERBENCH_DASK_SCHEDULER``). Small data work (decoding uploads and bodies,
predictions, plots) stays in the local pools either way: it is milliseconds of work on
data this process already holds, which a round trip through a scheduler would only slow.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import math
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, Unpack

from service.compute import (
    ComputePool,
    Gate,
    GateBounds,
    InTurn,
    Turn,
    holding_place,
    place_wait,
    timed_out,
)
from service.errors import (
    ComputeBusyError,
    ComputeFailedError,
    ComputeUnavailableError,
    WorkerDiedError,
)

if TYPE_CHECKING:
    from distributed import Client, Future

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Handle(Generic[T]):
    """A submitted task: await it for its result (or its ServiceError)."""

    def __init__(self, task: asyncio.Future[T]) -> None:
        self._task = task

    def __await__(self) -> Generator[Any, None, T]:
        return self._task.__await__()

    def cancel(self) -> None:
        self._task.cancel()

    def done(self) -> bool:
        return self._task.done()


class Executor(Protocol):
    """Runs worker functions (plain picklable callables: paths in, small results out)."""

    name: str
    timeout_s: float

    @property
    def task_s(self) -> float:
        """Seconds a task takes (moving average): what an honest Retry-After is made of."""
        ...

    def admitted(self) -> AbstractContextManager[None]:
        """Count one computation (however many tasks it submits) against the bound,
        or refuse it at once with ComputeBusyError."""
        ...

    @property
    def lanes(self) -> int:
        """Workers that can run tasks side by side (at least 1): how many tasks of one
        computation of small data may run at once."""
        ...

    def submit(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> Handle[T]:
        """Start ``fn(*args)``; ``timeout_s`` bounds it below the executor's own limit."""
        ...

    def cancel(self, handle: Handle[Any]) -> None:
        """Stop the task: its worker's CPU is free within a second or two."""
        ...

    @property
    def healthy(self) -> bool: ...


def submit_in_turn(
    executor: Executor,
    calls: list[tuple[Callable[..., T], tuple[Any, ...]]],
    *,
    timeout_s: float | None = None,
) -> Handle[Turn[T]]:
    """``fn(*args)`` of each call, one after another in one task: one round trip for
    several quick steps of a computation, their results in order with the seconds they
    took in the worker."""
    return executor.submit(InTurn(tuple(calls)), timeout_s=timeout_s)


class LocalExecutor:
    """The local :class:`ComputePool`: worker processes forked on this machine."""

    def __init__(self, pool: ComputePool) -> None:
        self.pool = pool
        self.name = pool.name
        self.timeout_s = pool.timeout_s

    @property
    def task_s(self) -> float:
        return self.pool.task_s

    def admitted(self) -> AbstractContextManager[None]:
        return self.pool.admitted()

    @property
    def lanes(self) -> int:
        return self.pool.workers

    def submit(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> Handle[T]:
        # The task inherits the caller's context: a computation admitted once is not
        # counted again by each of its tasks.
        return Handle(asyncio.ensure_future(self.pool.run(fn, *args, timeout_s=timeout_s)))

    def cancel(self, handle: Handle[Any]) -> None:
        # Cancelling the awaiting task cancels pebble's future, which terminates the
        # worker running it (see ComputePool.run).
        handle.cancel()

    @property
    def healthy(self) -> bool:
        return self.pool.healthy


# How often the Dask executor looks at its connection, and reconnects when it was lost.
WATCH_S = 1.0

# A computation admitted by DaskExecutor.admitted() is counted once, however many tasks.
_dask_admitted: contextvars.ContextVar[DaskExecutor | None] = contextvars.ContextVar(
    "dask_admitted", default=None
)


class DaskExecutor(Gate):
    """Tasks on a Dask cluster: each is :func:`service.daskworker.run_task` on a worker.

    A task carries the worker function and its small arguments (dataset paths, never
    arrays: workers memory-map the data from the shared data directory). At most the
    cluster's worker threads plus ``queue_size`` computations are admitted at once;
    past that, ComputeBusyError. While the scheduler cannot be reached (or has no
    worker, or a worker that cannot run tasks: see
    :func:`service.daskworker.misconfiguration`), computations are refused at once with
    ComputeUnavailableError; a watcher reconnects as soon as the scheduler is back.
    """

    def __init__(
        self, address: str, *, connect_timeout_s: float = 5.0, **bounds: Unpack[GateBounds]
    ) -> None:
        super().__init__(**bounds)
        self.name = "dask"
        self.address = address
        self.connect_timeout_s = connect_timeout_s
        self._client: Client | None = None
        self._problem = f"not yet connected to the Dask scheduler at {address}"
        # What a worker that cannot run tasks said of itself, as the watcher last looked.
        self._worker_problem: str | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False
        self._cancelling: set[asyncio.Future[Any]] = set()

    # -- the connection ----------------------------------------------------------------

    async def start(self) -> None:
        """Connect (or, when the scheduler is not there yet, keep trying in the background)."""
        await self._connect()
        await self._look_at_workers()
        self._watcher = asyncio.create_task(self._watch())

    async def close(self) -> None:
        # The watcher's cancellation can be lost: distributed's connect, and asyncio's
        # wait_for on Python 3.11, may return or raise something else when cancelled as
        # they finish. It then sees _closing at its next round and ends (the closing
        # service once waited for it for ever).
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), self.connect_timeout_s)  # type: ignore[no-untyped-call]

    async def _connect(self) -> None:
        from distributed import Client

        client = Client(  # type: ignore[no-untyped-call]
            self.address,
            asynchronous=True,
            timeout=self.connect_timeout_s,
            set_as_default=False,
        )
        try:
            await asyncio.wait_for(client, self.connect_timeout_s + 5)
        except (OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), self.connect_timeout_s)  # type: ignore[no-untyped-call]
            problem = f"the Dask scheduler at {self.address} cannot be reached ({exc})"
            if problem != self._problem:
                logger.warning("%s; trying again every %g s", problem, WATCH_S)
            self._problem = problem
            return
        self._client = client
        _send_promptly(client)
        self._problem = f"the Dask scheduler at {self.address} has no workers"
        logger.info("connected to the Dask scheduler at %s", self.address)

    async def _watch(self) -> None:
        # Dask's client reconnects by itself for connect_timeout_s, then closes: a new
        # client is made here, for as long as the scheduler stays away.
        while not self._closing:
            await asyncio.sleep(WATCH_S)
            client = self._client
            if client is not None and client.status in ("closing", "closed", "failed"):
                self._client = None
                logger.warning("lost the Dask scheduler at %s; reconnecting", self.address)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), self.connect_timeout_s)  # type: ignore[no-untyped-call]
            if self._client is None:
                await self._connect()
            else:
                _send_promptly(self._client)  # a stream of its own after a reconnect
            await self._look_at_workers()

    async def _look_at_workers(self) -> None:
        """Note a worker that told the scheduler it cannot run tasks (its first), if any."""
        from service.daskworker import PROBLEM_KEY

        client = self._client
        if client is None or client.status != "running" or client.scheduler is None:
            return
        try:
            info = await asyncio.wait_for(
                client.scheduler.identity(n_workers=-1), self.connect_timeout_s
            )
        except Exception as exc:  # the watcher must live on, whatever this raised
            logger.debug("could not ask the Dask scheduler for its workers: %r", exc)
            return  # most likely the connection is going: the watcher's next round sees it
        said = [
            f"the Dask worker at {address} {worker[PROBLEM_KEY]}"
            for address, worker in sorted(info.get("workers", {}).items())
            if worker.get(PROBLEM_KEY)
        ]
        if said and said[0] != self._worker_problem:
            logger.error("%s", said[0])
        self._worker_problem = said[0] if said else None

    def _threads(self, client: Client) -> int:
        """Worker threads in the cluster, as the scheduler last told the client."""
        info = client.scheduler_info()
        total = info.get("total_threads")
        if total is None:
            total = sum(w.get("nthreads", 0) for w in info.get("workers", {}).values())
        return int(total)

    def _available(self) -> tuple[Client, int]:
        """The connected client and the cluster's threads, or ComputeUnavailableError."""
        client = self._client
        if client is None or client.status != "running":
            if client is not None:
                self._problem = f"the connection to the Dask scheduler at {self.address} was lost"
            raise ComputeUnavailableError(
                f"{self._problem}; computations resume by themselves once it is back",
                retry_after=math.ceil(self.connect_timeout_s + WATCH_S),
            )
        if self._worker_problem is not None:
            # A task sent there would fail: the cluster is misconfigured, not busy.
            raise ComputeUnavailableError(
                f"{self._worker_problem}; computations resume by themselves once it is started so",
                retry_after=math.ceil(self.connect_timeout_s + WATCH_S),
            )
        threads = self._threads(client)
        if threads < 1:
            raise ComputeUnavailableError(
                f"the Dask scheduler at {self.address} has no workers; "
                "computations resume by themselves once one joins",
                retry_after=math.ceil(self.connect_timeout_s + WATCH_S),
            )
        return client, threads

    @property
    def healthy(self) -> bool:
        return self.problem is None

    @property
    def problem(self) -> str | None:
        """Why computations cannot run now, or None."""
        try:
            self._available()
        except ComputeUnavailableError as exc:
            return exc.detail
        return None

    # -- admission and tasks -------------------------------------------------------------

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        if _dask_admitted.get() is self:
            yield
            return
        _, threads = self._available()
        capacity = threads + self.queue_size
        if self.pending >= capacity:
            ahead = self.pending - threads + 1
            raise ComputeBusyError(
                f"all {threads} Dask worker thread(s) are busy and {self.queue_size} "
                "computation(s) are waiting; try again later",
                retry_after=place_wait(self.place_s, ahead, threads, self.timeout_s),
            )
        with holding_place(self, _dask_admitted, capacity, threads):
            yield

    @property
    def lanes(self) -> int:
        try:
            return self._available()[1]
        except ComputeUnavailableError:
            return 1  # the task itself gets the 503 that says why

    def submit(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> Handle[T]:
        return Handle(asyncio.ensure_future(self._run(fn, *args, timeout_s=timeout_s)))

    def cancel(self, handle: Handle[Any]) -> None:
        # The awaiting task cancels the Dask task; the worker running it sees that within
        # daskworker.POLL_S and kills the child process computing it.
        handle.cancel()

    async def _run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None) -> T:
        from service.daskworker import run_task

        with self.admitted():
            client, threads = self._available()
            limit = self.limit_s(timeout_s)
            key = f"{getattr(fn, '__name__', 'task')}-{uuid.uuid4().hex}"
            future = client.submit(
                run_task,
                key,
                fn,
                args,
                limit,
                self.threads_per_worker,
                key=key,
                pure=False,
            )
            began = time.monotonic()
            # The queue ahead of this task, shared by the threads, then the task itself:
            # no request waits for ever on a cluster that stopped answering.
            deadline = limit * ((threads + self.queue_size) / threads + 1) + self.grace_s
            result: T = await self._wait(client, future, deadline)
            self._observe(time.monotonic() - began)
            return result

    async def _wait(self, client: Client, future: Future[Any], deadline_s: float) -> Any:
        from distributed.scheduler import KilledWorker

        async def result() -> Any:
            return await future

        waiting = asyncio.ensure_future(result())
        try:
            done, _ = await asyncio.wait({waiting}, timeout=deadline_s)
        except asyncio.CancelledError:
            waiting.cancel()
            self._cancel_remote(client, future)
            raise
        if not done:
            waiting.cancel()
            self._cancel_remote(client, future)
            raise ComputeFailedError(
                f"the Dask cluster at {self.address} did not answer within {deadline_s:g} s; "
                "try again"
            )
        try:
            return waiting.result()
        except TimeoutError:
            raise timed_out(self.timeout_s) from None
        except KilledWorker as exc:
            self.worker_deaths += 1
            raise WorkerDiedError(
                f"the Dask workers running this request died, one after the other ({exc}); "
                "most likely for memory: ask for less work or data",
                killed=True,
            ) from None
        except concurrent.futures.CancelledError:
            # Dask cancels every task of a client whose scheduler connection is lost.
            raise ComputeUnavailableError(
                f"the connection to the Dask scheduler at {self.address} was lost while "
                "this request computed; ask again once it is back",
                retry_after=math.ceil(self.connect_timeout_s + WATCH_S),
            ) from None

    def _cancel_remote(self, client: Client, future: Future[Any]) -> None:
        if client.status != "running":
            return  # the scheduler is gone: it has forgotten the task, the worker too
        cancelling = asyncio.ensure_future(client.cancel([future], force=True))  # type: ignore[no-untyped-call]
        self._cancelling.add(cancelling)
        cancelling.add_done_callback(self._cancelling.discard)
        cancelling.add_done_callback(_ignore_failure)


def _send_promptly(client: Client) -> None:
    """Have ``client`` send its messages to the scheduler at most
    :data:`~service.daskscheduler.SEND_INTERVAL_S` apart, not Dask's 10 ms."""
    from service.daskscheduler import SEND_INTERVAL_S

    stream = getattr(client, "scheduler_comm", None)
    if stream is not None:
        stream.interval = SEND_INTERVAL_S


def _ignore_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("cancelling a Dask task failed: %s", task.exception())
