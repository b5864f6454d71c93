"""Service settings, read from ``CLUSTERBENCH_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.connection import parse_url

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
        description="BLAS/OpenMP threads per computation in the local pool; default: the "
        "CPUs the service may use. Fixed, not the load's, so that an answer's last digits do "
        "not depend on how many computations were running. Data of at most 100,000 rows and "
        "3.2 million values is computed on one thread.",
    )
    max_cells: int = Field(
        100_000_000,
        ge=4,
        description="Largest dataset accepted, in values (n_samples times n_features).",
    )
    max_sparse_features: int = Field(
        1 << 20,
        ge=1,
        description="Largest n_features of sparse data (text/x-libsvm, "
        "application/x-scipy-sparse), whose size is counted in stored values, not rows "
        "times columns: the fitted centres are dense, k times n_features; larger is 413. "
        "The default is HashingVectorizer's 2**20.",
    )
    max_dataset_bytes: int = Field(
        1024 * MIB,
        ge=1,
        description="Largest dataset stored, in bytes: X (float64, or float32 when sent as "
        "float32) plus its labels (8 bytes each, or 4 per character of the longest string "
        "label); larger is 413. Checked from the declared shape before decoding where the "
        "format allows.",
    )
    inline_max_bytes: int = Field(
        1024 * MIB,
        ge=0,
        description="Bound on the data sent inline (X in a benchmark request) kept on disk, "
        "per tenant with keys; least recently used first out. Uploads are kept until deleted.",
    )
    max_expansion: float = Field(
        100.0,
        ge=1,
        description="Largest ratio of a dataset's stored bytes to the bytes of its upload: a "
        "small compressed file (.npz, Parquet) that would expand past it is 413, checked "
        "from declared shapes before decoding.",
    )
    datasets_max_bytes: int = Field(
        8 * 1024 * MIB,
        ge=0,
        description="Bound on the uploaded datasets stored, all together (built-ins and "
        "inline data aside); a new upload past it is 507. Per tenant, see "
        "tenant_quota_bytes.",
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
    stability_max_labels: int = Field(
        200_000_000,
        ge=1,
        description="Largest stability run, in labels kept for the pairwise adjusted Rand "
        "index (seeds times n_samples, 1 byte each up to 256 clusters); larger runs get 413.",
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
    body_min_rate: int = Field(
        1024,
        ge=1,
        description="Slowest average a request body may arrive at, in bytes/s, once its first "
        "CLUSTERBENCH_BODY_TIMEOUT_S have passed; slower is 408.",
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
        description="Open connections served at once; past it, new requests get 503 "
        "(/healthz and /readyz keep a few more).",
    )
    max_client_connections: int = Field(
        100,
        ge=1,
        description="Open connections one client address may hold; past it, new ones get "
        "429. Behind a reverse proxy every client has the proxy's address: raise it to "
        "CLUSTERBENCH_MAX_CONNECTIONS and let the proxy limit each client.",
    )
    shutdown_grace_s: int = Field(
        30,
        ge=0,
        description="On SIGTERM, how long requests already running may take to finish; "
        "new connections are refused at once, and past this the rest are cancelled.",
    )
    log_level: str = Field("info", description="Log level of the server.")
    api_keys: SecretStr | None = Field(
        None,
        description="Keys as 'name:key,name:key'; each name is a tenant. With any key here or "
        "in the store (python -m service keys create NAME), every /v1 request needs one; "
        "with none, the service is open for a single user.",
    )
    tenant_quota_bytes: int | None = Field(
        None,
        ge=0,
        description="Bytes one tenant may store (its datasets, benchmarks, models and plots); "
        "past it, 403 quota-exceeded. Unset: no quota.",
    )
    dataset_ttl_s: float | None = Field(
        None,
        gt=0,
        description="Seconds after which a tenant's dataset that was not used expires, with "
        "its benchmarks and models; checked by a background sweep. Unset: kept until deleted.",
    )
    rate_limit: str | None = Field(
        None,
        description="Requests to /v1 per tenant, e.g. '600/minute' (the syntax of the limits "
        "library); past it, 429. Unset: no limit.",
    )
    metrics_tenants: bool = Field(
        False,
        description="Count /v1 requests by tenant name in /metrics, which needs no key; "
        "off: /metrics names no tenant.",
    )
    auth_failure_limit: str | None = Field(
        "20/minute",
        description="Requests with a missing or wrong key one client address may make, e.g. "
        "'20/minute'; past it, 429 for that address, whatever key it sends. Empty: no limit.",
    )
    cors_allow_origins: str = Field(
        "",
        description="Origins allowed to call the API from a browser, comma-separated "
        "(e.g. 'https://app.example.com'); empty: CORS off.",
    )
    allowed_hosts: str | None = Field(
        None,
        description="Host names the server answers to, comma-separated ('*' for any); "
        "default: the bound host, localhost, 127.0.0.1 and ::1 (any when bound to 0.0.0.0).",
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Proxies whose X-Forwarded-For and X-Forwarded-Proto are trusted, "
        "comma-separated ('*' for any).",
    )

    @field_validator("api_keys")
    @classmethod
    def _parse_api_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from service.tenants import parse_keys

            parse_keys(value.get_secret_value())  # its errors name entries, never keys
        return value

    @field_validator("rate_limit", "auth_failure_limit")
    @classmethod
    def _parse_rate_limit(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like '600/minute': {exc}") from None
        return value.strip()

    def host_allow_list(self) -> list[str]:
        """The host names the server answers to."""
        if self.allowed_hosts is not None:
            hosts = [h.strip() for h in self.allowed_hosts.split(",") if h.strip()]
        elif self.host in ("0.0.0.0", "::", ""):
            return ["*"]  # bound to every interface: reached by names this process cannot know
        else:
            hosts = [self.host, "localhost", "127.0.0.1", "::1"]
        # A Host header writes an IPv6 address in brackets.
        return list(dict.fromkeys(f"[{h}]" if ":" in h and h[0] != "[" else h for h in hosts))

    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.cors_allow_origins.split(",") if o.strip()]

    max_jobs: int = Field(
        100,
        ge=1,
        description="Jobs (Prefer: respond-async) one server process queues or runs at "
        "once; past it, 503.",
    )
    tenant_max_jobs: int = Field(
        20,
        ge=1,
        description="Jobs one tenant queues or runs at once in one server process; past it, "
        "429 with Retry-After from its own jobs ahead. Queued jobs start in turns across "
        "tenants. Not applied without keys (single-user mode).",
    )
    tenant_pool_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of a pool's places (workers + queue) one tenant's computations "
        "hold at once; past it, 429 (the rest are kept for other tenants). Not applied "
        "without keys (single-user mode).",
    )
    job_retention_s: float = Field(
        7 * 24 * 3600,
        gt=0,
        description="How long a finished job's record is kept (GET /v1/jobs/{id} answers it); "
        "then it is removed, its result staying in the cache.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis holding results, models, plots, sweeps, jobs, leases and rate-limit "
        "counters, shared by any number of API replicas on one shared data directory, e.g. "
        "'redis://redis:6379/0'. Unset: the embedded SQLite store in the data directory.",
    )
    redis_timeout_s: float = Field(
        2.0,
        gt=0,
        description="Socket timeout of every Redis call; past it the request gets 503 with "
        "Retry-After (never a hang).",
    )
    dask_scheduler: str | None = Field(
        None,
        description="Address of a Dask scheduler, e.g. 'tcp://scheduler:8786': benchmark fits "
        "run as tasks on its workers, which read datasets from this same data directory "
        "(shared). Unset: the local compute pool.",
    )
    dask_connect_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Longest wait to reach the Dask scheduler; while it cannot be reached, "
        "computations get 503 and the service keeps reconnecting.",
    )

    @field_validator("redis_url", "dask_scheduler", mode="before")
    @classmethod
    def _blank_address_is_unset(cls, value: Any) -> Any:
        # An address set blank (`CLUSTERBENCH_REDIS_URL=` in a compose file) means unset.
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("redis_url")
    @classmethod
    def _parse_redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_url(value)  # type: ignore[no-untyped-call]
            except ValueError as exc:  # its message never holds the password
                raise ValueError(f"not a Redis URL like 'redis://host:6379/0' ({exc})") from None
        return value

    @field_validator("dask_scheduler")
    @classmethod
    def _parse_dask_scheduler(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError("not a scheduler address like 'tcp://host:8786'")
        return value

    events_ping_s: float = Field(
        15.0,
        gt=0,
        description="Seconds between keep-alive comments on a job's event stream, so that "
        "proxies do not cut an idle one.",
    )
