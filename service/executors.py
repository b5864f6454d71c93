"""Where computations run: one small interface, the local process pool behind it.

The engine and the job runner only ``submit`` a worker function, await its handle, and
``cancel`` it; progress is reported by the job runner between tasks, so an executor knows
nothing of jobs. :class:`LocalExecutor` runs tasks in this process's
:class:`~service.compute.ComputePool`; a cluster executor (Dask) fits behind the same
interface.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, TypeVar

from service.compute import ComputePool

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

    def admitted(self) -> AbstractContextManager[None]:
        """Count one computation (however many tasks it submits) against the bound,
        or refuse it at once with ComputeBusyError."""
        ...

    def submit(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> Handle[T]:
        """Start ``fn(*args)``; ``timeout_s`` bounds it below the executor's own limit."""
        ...

    def cancel(self, handle: Handle[Any]) -> None:
        """Stop the task: its worker's CPU is free within a second or two."""
        ...

    @property
    def healthy(self) -> bool: ...


class LocalExecutor:
    """The local :class:`ComputePool`: worker processes forked on this machine."""

    def __init__(self, pool: ComputePool) -> None:
        self.pool = pool
        self.name = pool.name
        self.timeout_s = pool.timeout_s

    def admitted(self) -> AbstractContextManager[None]:
        return self.pool.admitted()

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
