"""Talking to Redis (``CLUSTERBENCH_REDIS_URL``): one way to connect, and every call's
Redis error raised as the problem it is for the client. Used by the result cache
(:mod:`service.redis_store`) and the job records (:mod:`service.jobs.redis_records`)."""

from __future__ import annotations

import functools
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.errors import StorageError, StorageFullError, StoreUnavailableError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Every key of the service starts so (one Redis database may hold other things too).
PREFIX = "clusterbench:"


# Idle seconds before the first probe, seconds between probes, probes unanswered: a dead
# peer is an error within 10 + 5 x 3 s (where the platform has these options).
_KEEPALIVE = {
    getattr(socket, name): value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}


def connect(url: str, *, timeout_s: float) -> redis.Redis:
    """A client of ``url`` whose every call gives up after ``timeout_s`` (never a hang).

    One retry on a broken connection: after a Redis restart the first command on each
    pooled connection fails once, and is then sent again on a fresh one. Never on a
    timeout: a Redis that does not answer (frozen, overloaded) was waited for twice (a 503
    after 4 s with the 2 s default), and again for an idle connection's health check.

    Nothing is sent but the command: no ``CLIENT SETINFO`` handshake on a new connection,
    no ``PING`` health check on an idle one. So a command reaches Redis alike on any
    connection, and a write that timed out may always have run once Redis answers again
    (see :meth:`service.jobs.manager.JobManager._stored_after_all`); with the handshake and the
    check, whether it could depended on the pool's history. A connection whose peer is
    gone without a word (a host lost, a NAT entry dropped) is found by TCP keepalive
    probes instead, within about 25 s: the invalidation listener's above all, which
    otherwise would wait for ever, its replica serving what others deleted.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        lib_name=None,
        lib_version=None,
        socket_keepalive=True,
        socket_keepalive_options=_KEEPALIVE,
        max_connections=64,
    )


def where(url: str) -> str:
    """``host:port`` of a Redis URL, for messages (never its password)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing a write at its ``maxmemory`` (noeviction)."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError)


def unavailable(exc: Exception, doing: str, url: str) -> StorageError:
    """The problem a failed Redis call is for the client: Redis full (507), else 503."""
    if is_full(exc):
        return StorageFullError(
            f"the shared store (Redis at {where(url)}) is full (maxmemory): {doing} failed and "
            "nothing was stored; retry once it has room (no restart is needed)"
        )
    return StoreUnavailableError(
        f"the shared store (Redis at {where(url)}) did not answer: {doing} failed "
        f"({type(exc).__name__}: {exc}); retry shortly, the service recovers by itself"
    )


class Guard:
    """Calls to the Redis at ``url``, a Redis error in each raised as the problem it is for
    the client.

    Once a call has timed out, and until one succeeds, one read at a time is sent to
    Redis and the others fail at once: Redis is not answering, and the reads queued for
    a thread meanwhile each waited a timeout of their own (16 job reads at once got their
    503s after 2, 4 and 7 s with the 2 s default). Writes are always sent: a computed
    result is worth a timeout, and it may run when Redis wakes.
    """

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._silent = False
        self._probing = False
        self._lock = threading.Lock()

    def __call__(self, doing: str, action: Callable[[], T]) -> T:
        """``action()``, which writes (or reads and writes)."""
        try:
            result = action()
        except redis.RedisError as exc:
            if isinstance(exc, redis.TimeoutError):
                self._silent = True
            problem = unavailable(exc, doing, self.url)
            logger.warning("%s", problem.detail)
            raise problem from exc
        self._silent = False
        return result

    def read(self, doing: str, action: Callable[[], T]) -> T:
        """``action()``, which only reads: failed at once while Redis is silent and
        another read is finding out whether it still is."""
        with self._lock:
            probe = self._silent
            if probe and self._probing:
                raise StoreUnavailableError(
                    f"the shared store (Redis at {where(self.url)}) did not answer within "
                    f"{self.timeout_s:g} s a moment ago: {doing} was not tried; retry "
                    "shortly, the service recovers by itself"
                )
            self._probing = self._probing or probe
        try:
            return self(doing, action)
        finally:
            if probe:
                with self._lock:
                    self._probing = False


def newest_first(
    guard: Guard,
    client: Any,
    key: str,
    high: float | str,
    *,
    batch: int,
    doing: str,
    **options: Any,
) -> Iterator[list[Any]]:
    """The members of the sorted set ``key`` from score ``high`` down, ``batch`` at a time,
    each batch read when it is asked for: for a page that filters as it goes. ``options``
    go to ``ZREVRANGEBYSCORE`` (``withscores=True``)."""
    offset = 0
    while True:
        chunk = guard.read(
            doing,
            functools.partial(
                client.zrevrangebyscore, key, high, "-inf", start=offset, num=batch, **options
            ),
        )
        if not chunk:
            return
        offset += len(chunk)
        yield chunk
