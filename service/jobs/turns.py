"""Queued jobs take the compute pool's free places in turns across tenants."""

from __future__ import annotations

import asyncio
from collections import deque

# Seconds between two tries of a queued job to get a place in a full compute pool.
ADMISSION_POLL_S = 0.2


class Turns:
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
