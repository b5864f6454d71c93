"""Service settings, read from ``CLUSTERBENCH_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


def _default_workers() -> int:
    return max(1, os.cpu_count() or 1)


class Settings(BaseSettings):
    """Everything the service reads from its environment.

    Every field can be set as ``CLUSTERBENCH_<NAME>``, e.g. ``CLUSTERBENCH_PORT=9000``.
    """

    model_config = SettingsConfigDict(env_prefix="CLUSTERBENCH_", frozen=True)

    host: str = Field("127.0.0.1", description="Interface the server binds to.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port the server listens on.")
    data_dir: Path = Field(
        Path(".clusterbench"),
        description="Where the embedded store and uploaded datasets live.",
    )
    max_body_bytes: int = Field(
        256 * MIB, ge=1, description="Largest request body accepted; larger ones get 413."
    )
    workers: int = Field(
        default_factory=_default_workers,
        ge=1,
        description="Size of the compute pool (processes running scikit-learn).",
    )
    queue_size: int = Field(
        4,
        ge=0,
        description="Computations allowed to wait for a free worker; past that, 503.",
    )
    timeout_s: float = Field(
        300.0, gt=0, description="Longest time one request may compute before it is stopped."
    )
    threads_per_worker: int | None = Field(
        None,
        ge=1,
        description="BLAS/OpenMP threads per computation; default: the CPUs divided among "
        "the computations running at the time.",
    )
    max_cells: int = Field(
        100_000_000,
        ge=4,
        description="Largest dataset accepted, in values (n_samples times n_features).",
    )
    inline_max_bytes: int = Field(
        1024 * MIB,
        ge=0,
        description="Bound on the data sent inline (X in a benchmark request) kept on disk; "
        "least recently used first out. Uploads are kept until deleted.",
    )
    cache_max_bytes: int = Field(
        1024 * MIB,
        ge=0,
        description="Bound on the cache's stored results, models and plots; "
        "least recently used benchmarks are evicted past it.",
    )
    memory_cache_bytes: int = Field(
        64 * MIB, ge=0, description="Bound on the in-process layer of hot cached responses."
    )
    data_workers: int = Field(
        1,
        ge=1,
        description="Size of the data lane: the processes that decode uploads and large "
        "bodies and answer predictions, so that small work never waits behind a benchmark.",
    )
    data_queue_size: int = Field(
        16, ge=0, description="Data-lane tasks allowed to wait for a free worker; past that, 503."
    )
    failure_ttl_s: float = Field(
        120.0,
        ge=0,
        description="How long a computation that timed out or killed its worker is "
        "remembered: the same request again gets the same answer at once.",
    )
    predict_max_distances: int = Field(
        200_000_000,
        ge=1,
        description="Largest prediction, in distances computed (n_samples times the "
        "model's n_clusters); larger requests get 413.",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest request line plus headers; larger ones get 431.",
    )
    header_timeout_s: float = Field(
        15.0,
        gt=0,
        description="Time a client has to send a request's line and headers; then 408.",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest pause between two parts of a request body; then 408.",
    )
    body_memory_bytes: int = Field(
        64 * MIB,
        ge=0,
        description="Request bodies held in memory at once, across requests; bodies past "
        "it (and any over 1 MiB) are spilled to a scratch file as they arrive.",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Open connections served at once; past it, new ones get 503.",
    )
    log_level: str = Field("info", description="Log level of the server.")
    max_jobs: int = Field(
        100,
        ge=1,
        description="Jobs (Prefer: respond-async) one server process queues or runs at "
        "once; past it, 503.",
    )
    events_ping_s: float = Field(
        15.0,
        gt=0,
        description="Seconds between keep-alive comments on a job's event stream, so that "
        "proxies do not cut an idle one.",
    )
