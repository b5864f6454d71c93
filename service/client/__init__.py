"""A Python client for the clusterbench service: :class:`Client` (sync), :class:`AsyncClient`.

    from service.client import Client

    with Client("http://127.0.0.1:8000") as client:
        result = client.benchmark("digits", strategies=["k-means++", "random"])
        print(client.table(result.id))

Answers are the service's own pydantic models (:mod:`service.schemas`); every problem the
service answers is raised as one exception class, :class:`ClusterbenchError`. An answer 503
or 429 is retried after its ``Retry-After``, a bounded number of times within a bounded
wait; failed connections are retried by httpx's transport. A benchmark asked with
``wait=True`` is run as a job where the service has jobs, and followed to its end.

Both clients share one implementation: each operation is a generator that yields what it
needs done (send a request, sleep, report progress) and is sent the answers. The sync
client runs it with blocking calls, the async one with awaits, so retries, job following
and errors are written once, and so are the public methods (:mod:`service.client.methods`).
"""

from __future__ import annotations

from service.client.asynchronous import AsyncClient
from service.client.errors import ClusterbenchError, retry_after
from service.client.kinds import (
    BENCHMARK,
    DEFAULT_URL,
    KINDS,
    MEDIA_TYPES,
    STABILITY,
    SWEEP,
    Kind,
    media_type_of,
)
from service.client.sync import Client
from service.schemas import Job, JobProgress

__all__ = [
    "BENCHMARK",
    "DEFAULT_URL",
    "KINDS",
    "MEDIA_TYPES",
    "STABILITY",
    "SWEEP",
    "AsyncClient",
    "Client",
    "ClusterbenchError",
    "Job",
    "JobProgress",
    "Kind",
    "media_type_of",
    "retry_after",
]
