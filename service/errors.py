"""The service's errors: one class per problem, rendered as RFC 9457 problem details.

Only standard-library imports here, so domain modules can raise these without
depending on the web framework.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

# Below this many free bytes the data directory's disk counts as full: /readyz says so,
# and a write there that failed without saying why is taken for the disk filling up.
MIN_FREE_BYTES = 1 << 20


def format_loc(loc: Sequence[Any]) -> str:
    """``["X", 3, 2]`` -> ``X[3][2]``: where in the request a problem is."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


def _restore(cls: type[ServiceError], detail: str, state: dict[str, Any]) -> ServiceError:
    error = cls.__new__(cls)
    Exception.__init__(error, detail)
    error.__dict__.update(state)
    return error


class ServiceError(Exception):
    """Base class: a problem the client is told about, with an HTTP status."""

    status: int = 500
    title: str = "Internal server error"
    slug: str = "internal-error"
    # The Retry-After of a problem that passes when its raiser gives none.
    default_retry_after: int | None = None

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        # Seconds after which the same request may succeed; sent as Retry-After.
        self.retry_after = self.default_retry_after if retry_after is None else retry_after

    @property
    def type(self) -> str:
        return f"urn:clusterbench:problem:{self.slug}"

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in compute workers too: keep every attribute across the process boundary.
        return (_restore, (type(self), self.detail, dict(self.__dict__)))


class MalformedRequestError(ServiceError):
    status = 400
    title = "Malformed request"
    slug = "malformed-request"


class InvalidRequestError(ServiceError):
    """Fields of the request that do not fit the schema (types, ranges, unknown names)."""

    status = 422
    title = "Invalid request"
    slug = "invalid-request"

    @classmethod
    def listing(cls, errors: list[dict[str, Any]]) -> InvalidRequestError:
        """One error whose detail names the first few problems and where they are."""
        shown = "; ".join(f"{format_loc(e['loc'])}: {e['msg']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return cls(f"the request is invalid: {shown}{more}", errors=errors)


class InvalidDataError(ServiceError):
    """The data (X, y) cannot be clustered as sent: the detail says what and where."""

    status = 422
    title = "Invalid data"
    slug = "invalid-data"


class InvalidParameterError(ServiceError):
    """A parameter is valid on its own but not for this data (e.g. n_clusters > n_samples)."""

    status = 422
    title = "Invalid parameter"
    slug = "invalid-parameter"


class ModelNotConvertibleError(ServiceError):
    """A step of the model's pipeline has no ONNX converter: the detail names it."""

    status = 422
    title = "Model not convertible"
    slug = "model-not-convertible"


class DatasetNotFoundError(ServiceError):
    status = 404
    title = "Dataset not found"
    slug = "dataset-not-found"


class DatasetConflictError(ServiceError):
    status = 409
    title = "Dataset conflict"
    slug = "dataset-conflict"


class BenchmarkNotFoundError(ServiceError):
    status = 404
    title = "Benchmark not found"
    slug = "benchmark-not-found"


class StrategyNotInBenchmarkError(ServiceError):
    status = 404
    title = "Strategy not in benchmark"
    slug = "strategy-not-in-benchmark"


class ModelNotFoundError(ServiceError):
    status = 404
    title = "Model not found"
    slug = "model-not-found"


class NotAcceptableError(ServiceError):
    status = 406
    title = "Not acceptable"
    slug = "not-acceptable"


class PayloadTooLargeError(ServiceError):
    status = 413
    title = "Payload too large"
    slug = "payload-too-large"


class UnsupportedMediaTypeError(ServiceError):
    status = 415
    title = "Unsupported media type"
    slug = "unsupported-media-type"


class _TryLaterError(ServiceError):
    """A 503 that always says when to try again (``Retry-After``)."""

    status = 503

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)


class ComputeBusyError(_TryLaterError):
    """Every worker is busy and the queue is full: try again later."""

    title = "Compute pool busy"
    slug = "compute-busy"


class TenantBusyError(ComputeBusyError):
    """The caller's tenant holds its share of the jobs, or of a pool's places; the rest
    are kept for other tenants. Its own work ahead says when to try again."""

    status = 429
    title = "Tenant's share in use"
    slug = "tenant-busy"


class ComputeTimeoutError(ServiceError):
    """The computation ran past ``CLUSTERBENCH_TIMEOUT_S`` and was stopped."""

    status = 504
    title = "Computation timed out"
    slug = "compute-timeout"


class ComputeFailedError(ServiceError):
    """A worker process died (killed, out of memory) while computing, or the pool failed."""

    status = 503
    title = "Computation failed"
    slug = "compute-failed"
    default_retry_after = 5


class WorkerDiedError(ComputeFailedError):
    """The worker running this request died: ``killed`` when by SIGKILL (most often the
    kernel, for memory), when the same request is likely to kill the next one too."""

    slug = "worker-died"

    def __init__(
        self, detail: str, *, retry_after: int | None = None, killed: bool = False
    ) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.killed = killed


class ComputeUnavailableError(ServiceError):
    """The compute cluster (the Dask scheduler of ``CLUSTERBENCH_DASK_SCHEDULER``) cannot
    be reached, or has no workers: try again once it is back."""

    status = 503
    title = "Compute cluster unavailable"
    slug = "compute-unavailable"
    default_retry_after = 5


class ServerStoppingError(ServiceError):
    """The server stopped (SIGTERM) and its grace period ran out before this request
    finished: another replica, or this one restarted, answers it."""

    status = 503
    title = "Server stopping"
    slug = "server-stopping"
    default_retry_after = 5


class AuthenticationRequiredError(ServiceError):
    """No key, or one the service does not know (or that was revoked)."""

    status = 401
    title = "Unauthorized"
    slug = "unauthorized"

    def __init__(self, detail: str, *, invalid: bool = False) -> None:
        super().__init__(detail)
        self.invalid = invalid

    def headers(self) -> dict[str, str]:
        challenge = 'Bearer realm="clusterbench"'
        if self.invalid:
            challenge += ', error="invalid_token"'
        return {**super().headers(), "WWW-Authenticate": challenge}


class QuotaExceededError(ServiceError):
    """Storing this would take the tenant past its storage quota."""

    status = 403
    title = "Quota exceeded"
    slug = "quota-exceeded"

    def __init__(self, detail: str, *, used: int, allowed: int) -> None:
        super().__init__(
            detail, errors=[{"loc": [], "msg": "quota exceeded", "used": used, "allowed": allowed}]
        )
        self.used = used
        self.allowed = allowed


class RateLimitedError(ServiceError):
    """Past the tenant's rate limit: ``Retry-After`` and the ``RateLimit-*`` headers say when."""

    status = 429
    title = "Too many requests"
    slug = "rate-limited"

    def __init__(self, detail: str, *, retry_after: int, rate_headers: dict[str, str]) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.rate_headers = rate_headers

    def headers(self) -> dict[str, str]:
        return {**super().headers(), **self.rate_headers}


class ComputeInProgressError(_TryLaterError):
    """Another request computes the same benchmark and did not finish within this one's limit."""

    title = "Computation in progress"
    slug = "compute-in-progress"


class StorageError(ServiceError):
    """The data directory failed a write (an I/O error); nothing was half-written."""

    status = 503
    title = "Storage unavailable"
    slug = "storage-unavailable"
    cause = "failed a write (an I/O error)"
    default_retry_after = 30
    # The folder whose disk refused the write, when it was a disk.
    directory: str | None = None

    @classmethod
    def of(
        cls, exc: BaseException, doing: str, *, directory: os.PathLike[str] | str | None = None
    ) -> StorageError | None:
        """The storage problem ``exc`` is (by errno or SQLite result code), or None.

        ``doing`` names the write for the message. SQLite answers "cannot open" both for a
        read-only ``directory`` and for things in the way of the file: only the first is
        a storage problem. A failure that does not say why is a full disk when
        ``directory``'s disk is full.
        """
        kind: type[StorageError] | None = None
        if isinstance(exc, OSError):
            kind = _ERRNO_KINDS.get(exc.errno or 0)
        elif isinstance(exc, sqlite3.Error):
            # Extended result codes keep the primary one in their low byte.
            code = getattr(exc, "sqlite_errorcode", -1) & 0xFF
            if code == sqlite3.SQLITE_CANTOPEN:
                if directory is not None and not os.access(directory, os.W_OK):
                    kind = StorageReadOnlyError
            else:
                kind = _SQLITE_KINDS.get(code)
        # A short write says nothing of why (numpy's tofile: "640000 requested and 77808
        # written", no errno), nor does an I/O error: the disk's free space does.
        unexplained = kind is StorageError or (type(exc) is OSError and exc.errno is None)
        if unexplained and directory is not None and disk_full(directory):
            kind = StorageFullError
        if kind is None:
            return None
        problem = kind(
            f"the data directory {kind.cause}: {doing} failed and nothing was stored; "
            "retry once it takes writes again (no restart is needed)"
        )
        problem.directory = None if directory is None else os.fspath(directory)
        return problem


def disk_full(directory: os.PathLike[str] | str) -> bool:
    """Whether ``directory``'s disk has less than MIN_FREE_BYTES free."""
    try:
        return shutil.disk_usage(directory).free < MIN_FREE_BYTES
    except OSError:
        return False


@contextlib.contextmanager
def storage_errors(doing: str, directory: os.PathLike[str] | str) -> Iterator[None]:
    """Raise a write in the block that the disk under ``directory`` refused (full,
    read-only, failing) as the StorageError it is for the client; ``doing`` names it.

    Classified here, where the write failed: once its partial file is removed, the
    disk may no longer look full."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        problem = StorageError.of(exc, doing, directory=directory)
        if problem is None:
            raise
        raise problem from exc


class StorageFullError(StorageError):
    """The data directory's file system (or quota) is full."""

    status = 507
    title = "Insufficient storage"
    slug = "storage-full"
    cause = "is full (no space left on the device, or the quota is used up)"


class StorageReadOnlyError(StorageError):
    """The data directory is read-only, or not writable by the service's user."""

    title = "Storage read-only"
    slug = "storage-read-only"
    cause = "is read-only, or not writable by the service's user"


class StoreUnavailableError(StorageError):
    """The shared store (Redis, CLUSTERBENCH_REDIS_URL) does not answer, or refused a
    command; every replica answers this until it is back, then recovers by itself."""

    title = "Shared store unavailable"
    slug = "store-unavailable"
    cause = "is unreachable"
    default_retry_after = 5


_ERRNO_KINDS: dict[int, type[StorageError]] = {
    errno.ENOSPC: StorageFullError,
    errno.EDQUOT: StorageFullError,
    errno.EROFS: StorageReadOnlyError,
    errno.EACCES: StorageReadOnlyError,
    errno.EPERM: StorageReadOnlyError,
    errno.EIO: StorageError,
}
_SQLITE_KINDS: dict[int, type[StorageError]] = {
    sqlite3.SQLITE_FULL: StorageFullError,
    sqlite3.SQLITE_READONLY: StorageReadOnlyError,
    sqlite3.SQLITE_PERM: StorageReadOnlyError,
    sqlite3.SQLITE_IOERR: StorageError,
}


def clip(text: str, limit: int = 80) -> str:
    """``text`` as ``repr``, shortened to about ``limit`` characters: client text quoted
    in a problem's detail never makes the answer larger than the bound."""
    shown = repr(text[:limit])
    return shown if len(text) <= limit else f"{shown[:-1]}…{shown[-1]} ({len(text)} characters)"


class ComputeCancelledError(ServiceError):
    """The computation a request waited for was cancelled (its job was deleted)."""

    status = 409
    title = "Computation cancelled"
    slug = "compute-cancelled"


class JobNotFoundError(ServiceError):
    status = 404
    title = "Job not found"
    slug = "job-not-found"


class JobFinishedError(ServiceError):
    """A job that has finished (or is storing its result) cannot be cancelled."""

    status = 409
    title = "Job finished"
    slug = "job-finished"


class JobOrphanedError(ServiceError):
    """A job whose server stopped, and which cannot run again (the reason says why)."""

    status = 503
    title = "Job orphaned"
    slug = "job-orphaned"


class UnsupportedStrategyError(ServiceError):
    """An init strategy the chosen estimator does not take (e.g. pca with bisecting)."""

    status = 422
    title = "Strategy not supported by the estimator"
    slug = "unsupported-strategy"


class InvalidCentersError(ServiceError):
    """Custom initial centres of the wrong shape, or not finite."""

    status = 422
    title = "Invalid centres"
    slug = "invalid-centers"


class SweepNotFoundError(ServiceError):
    status = 404
    title = "Sweep not found"
    slug = "sweep-not-found"


class StabilityNotFoundError(ServiceError):
    status = 404
    title = "Stability run not found"
    slug = "stability-not-found"
