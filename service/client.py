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
and errors are written once.
"""

from __future__ import annotations

import contextlib
import email.utils
import inspect
import io
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self, TypeVar, cast, overload

import anyio
import httpx
from pydantic import BaseModel

from service import __version__
from service.schemas import (
    Anomalies,
    BenchmarkList,
    BenchmarkRequest,
    BenchmarkResult,
    BenchmarkSummary,
    DatasetInfo,
    DatasetList,
    Job,
    JobProgress,
    JobState,
    ModelInfo,
    Prediction,
    StabilityRequest,
    StabilityResult,
    SweepRequest,
    SweepResult,
)

__all__ = [
    "KINDS",
    "AsyncClient",
    "Client",
    "ClusterbenchError",
    "Job",
    "JobProgress",
    "media_type_of",
]

DEFAULT_URL = "http://127.0.0.1:8000"
# A benchmark computes for at most the server's CLUSTERBENCH_TIMEOUT_S (300 s by default)
# while the request waits for it; the read timeout leaves room for that.
DEFAULT_TIMEOUT = httpx.Timeout(330.0, connect=10.0)
# The media type of an upload, by its file's extension (service.formats reads the same).
MEDIA_TYPES = {
    ".csv": "text/csv",
    ".npy": "application/x-npy",
    ".npz": "application/x-npz",
    ".parquet": "application/vnd.apache.parquet",
    ".pq": "application/vnd.apache.parquet",
    ".json": "application/json",
    ".svm": "text/x-libsvm",
    ".libsvm": "text/x-libsvm",
}
# A scipy.sparse matrix is sent as scipy.sparse.save_npz writes it.
SCIPY_SPARSE = "application/x-scipy-sparse"
DATASETS_PATH = "/v1/datasets"
RETRY_STATUSES = frozenset({429, 503})
# Connections refused or reset before a request was sent; httpx retries those itself.
CONNECT_RETRIES = 2
# Polling a job: the first look after this long, then 1.5 times longer each time, up to
# the cap, unless the service's Retry-After says otherwise.
POLL_FIRST_S = 0.2
POLL_MAX_S = 1.0
CHUNK_BYTES = 1 << 20

T = TypeVar("T")


class ClusterbenchError(Exception):
    """A problem the service answered (RFC 9457 problem details), or no answer at all.

    Attributes
    ----------
    status : int or None
        The HTTP status, or None when no answer came (unreachable, timed out).
    title, detail : str
        What went wrong, in short and in full; ``detail`` names the field, row or column.
    type : str
        The problem type, e.g. ``urn:clusterbench:problem:invalid-data``.
    errors : list of dict
        One entry per problem: ``loc`` (where) and ``msg``.
    retry_after : float or None
        Seconds after which the same request may succeed, when the service said.
    """

    def __init__(
        self,
        status: int | None,
        title: str,
        detail: str,
        *,
        type: str = "about:blank",
        errors: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{title} ({status}): {detail}" if status else f"{title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.errors = errors or []
        self.retry_after = retry_after

    @classmethod
    def from_problem(cls, problem: Mapping[str, Any], status: int | None = None) -> Self:
        """The error a problem object describes (a job's ``error``, a problem+json body)."""
        given = problem.get("status")
        errors = problem.get("errors")
        return cls(
            given if isinstance(given, int) else status,
            str(problem.get("title") or "Error"),
            str(problem.get("detail") or problem.get("title") or "no detail given"),
            type=str(problem.get("type") or "about:blank"),
            errors=errors if isinstance(errors, list) else None,
        )

    @classmethod
    def from_response(cls, response: httpx.Response) -> Self:
        """The error an answer of status 400 or more carries."""
        problem: Any = None
        if response.headers.get("content-type", "").split(";")[0].strip().endswith("json"):
            try:
                problem = response.json()
            except ValueError:
                problem = None
        if isinstance(problem, dict) and ("title" in problem or "detail" in problem):
            error = cls.from_problem(problem, response.status_code)
            error.status = response.status_code
        else:
            # Not the service's own problem body: a proxy's page, a bare server error.
            text = " ".join(response.text.split())[:200]
            error = cls(
                response.status_code,
                response.reason_phrase or "Error",
                text
                or f"{response.request.method} {response.request.url} answered "
                f"{response.status_code}",
            )
        error.retry_after = retry_after(response)
        return error


@dataclass(frozen=True)
class Kind:
    """One kind of question the service answers: where it is asked, with which request
    model, and which result model answers it. The client's parameters and the command's
    flags are the request model's fields, so a field added there reaches both."""

    name: str  # as a job's `kind` says it
    path: str
    request: type[BaseModel]
    result: type[BaseModel]

    def body(self, dataset: str | DatasetInfo | None, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON body asking ``dataset`` with ``fields`` (arrays as lists)."""
        unknown = [n for n in fields if n == "dataset" or n not in self.request.model_fields]
        if unknown:
            allowed = ", ".join(n for n in self.request.model_fields if n != "dataset")
            raise TypeError(
                f"a {self.name} takes no field {', '.join(unknown)}: its fields are {allowed} "
                "(and the dataset, the first argument)"
            )
        body: dict[str, Any] = {key: _plain(value) for key, value in fields.items()}
        if "strategies" in body:
            body["strategies"] = [
                item if isinstance(item, str) else dict(item) for item in body["strategies"]
            ]
        if dataset is not None:
            body["dataset"] = dataset.id if isinstance(dataset, DatasetInfo) else dataset
        return body


BENCHMARK = Kind("benchmark", "/v1/benchmarks", BenchmarkRequest, BenchmarkResult)
SWEEP = Kind("sweep", "/v1/sweeps", SweepRequest, SweepResult)
STABILITY = Kind("stability", "/v1/stability", StabilityRequest, StabilityResult)
KINDS = {kind.name: kind for kind in (BENCHMARK, SWEEP, STABILITY)}

ProgressCallback = Callable[[Job], Any]


def media_type_of(path: str | os.PathLike[str]) -> str:
    """The upload media type of a data file, by its extension."""
    suffix = Path(path).suffix.lower()
    try:
        return MEDIA_TYPES[suffix]
    except KeyError:
        raise ValueError(
            f"cannot tell the format of {os.fspath(path)!r} from its extension: use one of "
            f"{', '.join(MEDIA_TYPES)}, or give media_type"
        ) from None


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the ``Retry-After`` header asks to wait (a number or an HTTP date), if any."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


# What an operation asks its driver to do.
@dataclass(frozen=True)
class _Request:
    method: str
    url: str
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    file: Path | None = None  # streamed from disk, opened afresh for each attempt
    # Sent as a multipart form's `file` field with this name (the dataset's name), with
    # `file` or `content` as its bytes.
    file_name: str | None = None


@dataclass(frozen=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True)
class _Notify:
    callback: ProgressCallback
    job: Job


_Action = _Request | _Sleep | _Notify
_Flow = Generator[_Action, Any, T]

_JSON = {"Accept": "application/json"}


def _plain(value: Any) -> Any:
    """A NumPy array (or anything with ``tolist``) as nested lists, for JSON."""
    return value.tolist() if hasattr(value, "tolist") else value


def _as_file(data: Any, name: str | None) -> tuple[bytes, str, str | None]:
    """A NumPy array (as ``.npy``), a pandas DataFrame (as Parquet, its column names
    kept) or a scipy.sparse matrix (as ``save_npz`` writes it, CSR: it stays sparse): its
    bytes, media type and the name it is sent with."""
    if hasattr(data, "tocsr") and hasattr(data, "nnz"):
        import scipy.sparse

        buffer = io.BytesIO()
        scipy.sparse.save_npz(buffer, data.tocsr())
        return buffer.getvalue(), SCIPY_SPARSE, name
    if hasattr(data, "to_parquet") and hasattr(data, "columns"):
        buffer = io.BytesIO()
        data.to_parquet(buffer, index=False)
        suffix = ".parquet"
    elif hasattr(data, "__array__"):
        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, np.asarray(data), allow_pickle=False)
        suffix = ".npy"
    else:
        raise TypeError(
            "upload takes a file path, bytes, a NumPy array, a pandas DataFrame or a "
            f"scipy.sparse matrix, not {type(data).__name__}"
        )
    return buffer.getvalue(), MEDIA_TYPES[suffix], name


class _Operations:
    """Settings and the operations, as flows; the subclasses run them."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        max_retries: int,
        max_retry_wait: float,
        wait_timeout: float,
    ) -> None:
        self.base_url = (base_url or os.environ.get("CLUSTERBENCH_URL") or DEFAULT_URL).rstrip("/")
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.wait_timeout = wait_timeout
        self._default_headers = {"User-Agent": f"clusterbench-client/{__version__}"}
        if api_key is None:
            api_key = os.environ.get("CLUSTERBENCH_API_KEY")
        if api_key:
            self._default_headers["Authorization"] = f"Bearer {api_key}"

    def _no_answer(self, request: _Request, exc: httpx.TransportError) -> ClusterbenchError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return ClusterbenchError(
                None,
                "Service unreachable",
                f"cannot reach {self.base_url}: is the service running? "
                "start it with `clusterbench serve`",
            )
        if isinstance(exc, httpx.TimeoutException):
            return ClusterbenchError(
                None,
                "Timed out",
                f"{request.method} {self.base_url}{request.url} got no answer in time "
                f"({type(exc).__name__}); a longer timeout= may help",
            )
        return ClusterbenchError(
            None, "Connection failed", f"{request.method} {self.base_url}{request.url}: {exc}"
        )

    # -- flows ---------------------------------------------------------------------------

    def _exchange(self, request: _Request) -> _Flow[httpx.Response]:
        """Send ``request``; an answer 503 or 429 is sent again after its Retry-After."""
        waited = 0.0
        attempt = 0
        while True:
            response: httpx.Response = yield request
            if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
                return response
            delay = retry_after(response)
            if delay is None:
                delay = min(0.5 * 2**attempt, 8.0)
            if waited + delay > self.max_retry_wait:
                return response
            yield _Sleep(delay)
            waited += delay
            attempt += 1

    def _call(self, request: _Request) -> _Flow[httpx.Response]:
        response = yield from self._exchange(request)
        if response.status_code >= 400:
            raise ClusterbenchError.from_response(response)
        return response

    def _create(
        self,
        kind: Kind,
        body: dict[str, Any],
        wait: bool,
        progress: ProgressCallback | None,
        wait_timeout: float | None,
    ) -> _Flow[Any]:
        response = yield from self._call(
            _Request("POST", kind.path, headers={**_JSON, "Prefer": "respond-async"}, json=body)
        )
        if response.status_code != 202:
            # Stored already, or a service without jobs: the result itself.
            return kind.result.model_validate_json(response.content)
        job = Job.model_validate_json(response.content)
        if not wait:
            return job
        return (
            yield from self._follow(
                job,
                response.headers.get("location") or f"/v1/jobs/{job.id}",
                progress,
                self.wait_timeout if wait_timeout is None else wait_timeout,
                first_wait=retry_after(response),
            )
        )

    def _follow(
        self,
        job: Job,
        url: str,
        progress: ProgressCallback | None,
        timeout: float,
        first_wait: float | None,
    ) -> _Flow[Any]:
        """Poll the job at ``url`` until it ends; its result, or its error raised."""
        deadline = time.monotonic() + timeout
        backoff = POLL_FIRST_S
        wait = first_wait if first_wait is not None else backoff
        seen: tuple[Any, ...] | None = None
        while True:
            state = (job.state, job.progress.done, job.progress.total, job.progress.stage)
            if progress is not None and state != seen:
                yield _Notify(progress, job)
            seen = state
            if job.finished:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClusterbenchError(
                    None,
                    "Job not finished",
                    f"job {job.id} is still {job.state} after {timeout:g} s; "
                    f"follow it with get_job({job.id!r})",
                )
            yield _Sleep(min(wait, left))
            response = yield from self._call(_Request("GET", url, headers=_JSON))
            job = Job.model_validate_json(response.content)
            backoff = min(backoff * 1.5, POLL_MAX_S)
            asked = retry_after(response)
            wait = asked if asked is not None else backoff
        if job.state != JobState.SUCCEEDED:
            raise ClusterbenchError.from_problem(
                job.error.model_dump()
                if job.error
                else {"title": f"Job {job.state}", "detail": f"job {job.id} was {job.state}"}
            )
        if not job.result_url:
            raise ClusterbenchError(
                None, "Job without result", f"job {job.id} succeeded but names no result_url"
            )
        response = yield from self._call(_Request("GET", job.result_url, headers=_JSON))
        return KINDS[job.kind or BENCHMARK.name].result.model_validate_json(response.content)

    def _follow_id(self, job_id: str, progress: ProgressCallback | None) -> _Flow[Any]:
        job = yield from self._get_job(job_id)
        url = f"/v1/jobs/{job_id}"
        return (yield from self._follow(job, url, progress, self.wait_timeout, None))

    def _jobs(self, state: str | None, limit: int) -> _Flow[list[Job]]:
        params = {"limit": str(limit), **({} if state is None else {"state": state})}
        response = yield from self._call(_Request("GET", "/v1/jobs", params, headers=_JSON))
        return [Job.model_validate(job) for job in response.json()["jobs"]]

    def _cancel_job(self, job_id: str) -> _Flow[Job]:
        response = yield from self._call(_Request("DELETE", f"/v1/jobs/{job_id}", headers=_JSON))
        return Job.model_validate_json(response.content)

    def _get(self, kind: Kind, result_id: str) -> _Flow[Any]:
        response = yield from self._call(_Request("GET", f"{kind.path}/{result_id}", headers=_JSON))
        return kind.result.model_validate_json(response.content)

    def _text(self, url: str, accept: str) -> _Flow[str]:
        response = yield from self._call(_Request("GET", url, headers={"Accept": accept}))
        return response.text

    def _bytes(self, url: str, params: Mapping[str, str] | None = None) -> _Flow[bytes]:
        response = yield from self._call(
            _Request("GET", url, params=params, headers={"Accept": "image/png"})
        )
        return response.content

    def _benchmarks(self, limit: int) -> _Flow[list[BenchmarkSummary]]:
        found: list[BenchmarkSummary] = []
        cursor: str | None = None
        while len(found) < limit:
            params = {"limit": str(min(limit - len(found), 100))}
            if cursor is not None:
                params["cursor"] = cursor
            response = yield from self._call(
                _Request("GET", BENCHMARK.path, params=params, headers=_JSON)
            )
            page = BenchmarkList.model_validate_json(response.content)
            found.extend(page.benchmarks)
            cursor = page.next_cursor
            if cursor is None:
                break
        return found

    def _delete(self, url: str) -> _Flow[None]:
        yield from self._call(_Request("DELETE", url))

    def _get_job(self, job_id: str) -> _Flow[Job]:
        response = yield from self._call(_Request("GET", f"/v1/jobs/{job_id}", headers=_JSON))
        return Job.model_validate_json(response.content)

    def _upload(
        self,
        data: Any,
        media_type: str | None,
        label_column: str | None,
        name: str | None,
        categorical: Sequence[str] | None = None,
        weight_column: str | None = None,
    ) -> _Flow[DatasetInfo]:
        query = {
            "label_column": label_column,
            # Names, comma-separated as the route takes them (a str is one or more names).
            "categorical": (
                None
                if not categorical
                else categorical
                if isinstance(categorical, str)
                else ",".join(categorical)
            ),
            "weight_column": weight_column,
        }
        params = {key: value for key, value in query.items() if value is not None} or None
        if isinstance(data, str | os.PathLike):
            path = Path(data)
            size = path.stat().st_size  # FileNotFoundError here, before any request
            # Named after its file unless named otherwise (name="" for no name): a
            # multipart form carries the name; raw bytes have none.
            file_name = path.name if name is None else (name or None)
            length = {} if file_name else {"Content-Length": str(size)}
            request = _Request(
                "POST",
                "/v1/datasets",
                params=params,
                headers={**_JSON, "Content-Type": media_type or media_type_of(path), **length},
                file=path,
                file_name=file_name,
            )
        else:
            if isinstance(data, bytes | bytearray | memoryview):
                content, file_name = bytes(data), name
                if media_type is None:
                    raise ValueError(
                        "give the media_type of raw bytes, one of "
                        f"{sorted({*MEDIA_TYPES.values(), SCIPY_SPARSE})}"
                    )
            else:
                content, media_type, file_name = _as_file(data, name)
            request = _Request(
                "POST",
                "/v1/datasets",
                params=params,
                headers={**_JSON, "Content-Type": media_type},
                content=content,
                file_name=file_name,
            )
        response = yield from self._call(request)
        return DatasetInfo.model_validate_json(response.content)

    def _datasets(self) -> _Flow[list[DatasetInfo]]:
        response = yield from self._call(_Request("GET", "/v1/datasets", headers=_JSON))
        return DatasetList.model_validate_json(response.content).datasets

    def _dataset(self, dataset_id: str) -> _Flow[DatasetInfo]:
        response = yield from self._call(
            _Request("GET", f"/v1/datasets/{dataset_id}", headers=_JSON)
        )
        return DatasetInfo.model_validate_json(response.content)

    def _model(self, model_id: str) -> _Flow[ModelInfo]:
        response = yield from self._call(_Request("GET", f"/v1/models/{model_id}", headers=_JSON))
        return ModelInfo.model_validate_json(response.content)

    def _predict(self, model_id: str, X: Any) -> _Flow[Prediction]:
        response = yield from self._call(
            _Request("POST", f"/v1/models/{model_id}/predict", headers=_JSON, json={"X": _plain(X)})
        )
        return Prediction.model_validate_json(response.content)

    def _anomalies(self, model_id: str, X: Any, contamination: float) -> _Flow[Anomalies]:
        response = yield from self._call(
            _Request(
                "POST",
                f"/v1/models/{model_id}/anomalies",
                headers=_JSON,
                json={"X": _plain(X), "contamination": contamination},
            )
        )
        return Anomalies.model_validate_json(response.content)

    def _export(self, model_id: str) -> _Flow[bytes]:
        response = yield from self._call(
            _Request(
                "GET",
                f"/v1/models/{model_id}/model.onnx",
                headers={"Accept": "application/octet-stream"},
            )
        )
        return response.content


@contextlib.contextmanager
def _sent_as(request: _Request, stream: Callable[[Path], Any]) -> Iterator[dict[str, Any]]:
    """httpx's arguments for ``request`` besides its method and URL; a file opened for a
    multipart form is closed on exit."""
    args: dict[str, Any] = {"params": request.params, "json": request.json}
    if request.file_name is None:
        args["headers"] = request.headers
        args["content"] = stream(request.file) if request.file is not None else request.content
        yield args
        return
    with contextlib.ExitStack() as files:
        source = (
            files.enter_context(request.file.open("rb"))
            if request.file is not None
            else request.content
        )
        media_type = request.headers.get("Content-Type")
        # httpx writes the form's own Content-Type, with its boundary.
        args["headers"] = {k: v for k, v in request.headers.items() if k != "Content-Type"}
        args["files"] = {"file": (request.file_name, source, media_type)}
        yield args


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            yield chunk


async def _async_chunks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as source:
        while chunk := await source.read(CHUNK_BYTES):
            yield chunk


class Client(_Operations):
    """The service's API, over a blocking httpx connection pool.

    Parameters
    ----------
    base_url : str, optional
        Where the service is; default ``$CLUSTERBENCH_URL``, else ``http://127.0.0.1:8000``.
    api_key : str, optional
        Sent as ``Authorization: Bearer <api_key>``, for a service with keys; default
        ``$CLUSTERBENCH_API_KEY``, if set.
    timeout : float or httpx.Timeout
        Per request; the default waits up to 330 s for an answer (a benchmark computes for
        at most 300 s by the service's default) and 10 s to connect.
    max_retries, max_retry_wait : int, float
        An answer 503 or 429 is sent again after its ``Retry-After`` (else 0.5 s, doubling),
        at most ``max_retries`` times and ``max_retry_wait`` seconds in all; then it is raised.
    wait_timeout : float
        How long ``benchmark(wait=True)`` follows a job before it gives up.
    transport : httpx.BaseTransport, optional
        Instead of httpx's own, which retries failed connections twice.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 8,
        max_retry_wait: float = 120.0,
        wait_timeout: float = 3600.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, max_retries, max_retry_wait, wait_timeout)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=self._default_headers,
            timeout=timeout,
            transport=transport or httpx.HTTPTransport(retries=CONNECT_RETRIES),
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, request: _Request) -> httpx.Response:
        try:
            with _sent_as(request, _chunks) as args:
                return self._http.request(request.method, request.url, **args)
        except httpx.TransportError as exc:
            raise self._no_answer(request, exc) from exc

    def _run(self, flow: _Flow[T]) -> T:
        reply: Any = None
        try:
            while True:
                action = flow.send(reply)
                reply = None
                if isinstance(action, _Sleep):
                    time.sleep(action.seconds)
                elif isinstance(action, _Notify):
                    action.callback(action.job)
                else:
                    reply = self._send(action)
        except StopIteration as stop:
            return cast(T, stop.value)
        finally:
            flow.close()

    @overload
    def benchmark(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: Literal[True] = True,
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> BenchmarkResult: ...

    @overload
    def benchmark(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: Literal[False],
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> BenchmarkResult | Job: ...

    def benchmark(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: bool = True,
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> BenchmarkResult | Job:
        """Run a benchmark (or fetch it from the cache): ``POST /v1/benchmarks``.
        ``dataset`` is a built-in name, an uploaded dataset's id or its :class:`DatasetInfo`;
        ``fields`` are the request's other fields (``X``, ``y``, ``n_clusters``,
        ``strategies``, ...; NumPy arrays are sent as lists). Where the service runs it as
        a job, it is followed to its end with ``progress(job)`` called at each change, for
        at most ``wait_timeout`` seconds; with ``wait=False`` the job is returned at once.
        """
        body = BENCHMARK.body(dataset, fields)
        return cast(
            "BenchmarkResult | Job",
            self._run(self._create(BENCHMARK, body, wait, progress, wait_timeout)),
        )

    @overload
    def sweep(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: Literal[True] = True,
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> SweepResult: ...

    @overload
    def sweep(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: Literal[False],
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> SweepResult | Job: ...

    def sweep(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: bool = True,
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> SweepResult | Job:
        """Choose k: a sweep over k (or fetched from the cache), ``POST /v1/sweeps``."""
        body = SWEEP.body(dataset, fields)
        return cast(
            "SweepResult | Job",
            self._run(self._create(SWEEP, body, wait, progress, wait_timeout)),
        )

    @overload
    def stability(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: Literal[True] = True,
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> StabilityResult: ...

    @overload
    def stability(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: Literal[False],
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> StabilityResult | Job: ...

    def stability(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: bool = True,
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> StabilityResult | Job:
        """A benchmark under several seeds: ``POST /v1/stability``."""
        body = STABILITY.body(dataset, fields)
        return cast(
            "StabilityResult | Job",
            self._run(self._create(STABILITY, body, wait, progress, wait_timeout)),
        )

    def get(self, kind: str, result_id: str) -> Any:
        """A stored result: ``kind`` is ``benchmark``, ``sweep`` or ``stability``."""
        return self._run(self._get(KINDS[kind], result_id))

    def get_benchmark(self, benchmark_id: str) -> BenchmarkResult:
        """A stored benchmark: ``GET /v1/benchmarks/{benchmark_id}``."""
        return cast(BenchmarkResult, self._run(self._get(BENCHMARK, benchmark_id)))

    def table(self, result_id: str, kind: str = "benchmark") -> str:
        """A stored result as a table (its ``text/plain`` form)."""
        return self._run(self._text(f"{KINDS[kind].path}/{result_id}", "text/plain"))

    def report(self, result_id: str, kind: str = "benchmark") -> str:
        """A stored result as one self-contained HTML page."""
        return self._run(self._text(f"{KINDS[kind].path}/{result_id}/report", "text/html"))

    def plot(self, result_id: str, init: str | None = None, kind: str = "benchmark") -> bytes:
        """The plot as PNG bytes: a benchmark's decision boundaries (one strategy's panel
        with ``init``), or a sweep's scores against k."""
        params = None if init is None else {"init": init}
        return self._run(self._bytes(f"{KINDS[kind].path}/{result_id}/plot.png", params))

    def benchmarks(self, limit: int = 20) -> list[BenchmarkSummary]:
        """The stored benchmarks (the caller's), newest first, at most ``limit``."""
        return self._run(self._benchmarks(limit))

    def delete(self, kind: str, item_id: str) -> None:
        """Delete a ``benchmark`` (with its models and plots) or a ``dataset``."""
        path = DATASETS_PATH if kind == "dataset" else KINDS[kind].path
        self._run(self._delete(f"{path}/{item_id}"))

    def get_job(self, job_id: str) -> Job:
        """A job's state and progress: ``GET /v1/jobs/{job_id}``."""
        return self._run(self._get_job(job_id))

    def jobs(self, state: str | None = None, limit: int = 20) -> list[Job]:
        """The jobs (the caller's), newest first; only those in ``state`` if given."""
        return self._run(self._jobs(state, limit))

    def follow(self, job_id: str, progress: ProgressCallback | None = None) -> Any:
        """Follow a job to its end; its result, or its problem raised."""
        return self._run(self._follow_id(job_id, progress))

    def cancel_job(self, job_id: str) -> Job:
        """Cancel a queued or running job; the job as it is then."""
        return self._run(self._cancel_job(job_id))

    def upload(
        self,
        data: str | os.PathLike[str] | bytes | Any,
        media_type: str | None = None,
        label_column: str | None = None,
        name: str | None = None,
        categorical: Sequence[str] | None = None,
        weight_column: str | None = None,
    ) -> DatasetInfo:
        """Upload a data file (its media type from its extension, its name the file's),
        raw bytes of ``media_type``, a NumPy array, a pandas DataFrame or a scipy.sparse
        matrix (kept sparse); ``name`` names the dataset. For CSV and Parquet,
        ``categorical`` names columns to treat as categories and ``weight_column`` the
        column of each row's ``sample_weight``."""
        return self._run(
            self._upload(data, media_type, label_column, name, categorical, weight_column)
        )

    def datasets(self) -> list[DatasetInfo]:
        """The built-in datasets and every uploaded one."""
        return self._run(self._datasets())

    def dataset(self, dataset_id: str) -> DatasetInfo:
        """One dataset's shape, labels and format."""
        return self._run(self._dataset(dataset_id))

    def model(self, model_id: str) -> ModelInfo:
        """A fitted model: its centres and scaler."""
        return self._run(self._model(model_id))

    def predict(self, model_id: str, X: Any) -> Prediction:
        """Each sample's nearest centre under a fitted model, and its distance to it."""
        return self._run(self._predict(model_id, X))

    def anomalies(self, model_id: str, X: Any, contamination: float = 0.01) -> Anomalies:
        """Each sample's centre and distance, flagged past the (1 - contamination)
        quantile of the training rows' distances."""
        return self._run(self._anomalies(model_id, X, contamination))

    def export(self, model_id: str) -> bytes:
        """The model's whole pipeline as ONNX bytes, for onnxruntime anywhere."""
        return self._run(self._export(model_id))


class AsyncClient(_Operations):
    """The same API as :class:`Client`, awaited; ``progress`` may be a coroutine function."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 8,
        max_retry_wait: float = 120.0,
        wait_timeout: float = 3600.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, max_retries, max_retry_wait, wait_timeout)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._default_headers,
            timeout=timeout,
            transport=transport or httpx.AsyncHTTPTransport(retries=CONNECT_RETRIES),
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, request: _Request) -> httpx.Response:
        try:
            with _sent_as(request, _async_chunks) as args:
                return await self._http.request(request.method, request.url, **args)
        except httpx.TransportError as exc:
            raise self._no_answer(request, exc) from exc

    async def _run(self, flow: _Flow[T]) -> T:
        reply: Any = None
        try:
            while True:
                action = flow.send(reply)
                reply = None
                if isinstance(action, _Sleep):
                    await anyio.sleep(action.seconds)
                elif isinstance(action, _Notify):
                    outcome = action.callback(action.job)
                    if inspect.isawaitable(outcome):
                        await outcome
                else:
                    reply = await self._send(action)
        except StopIteration as stop:
            return cast(T, stop.value)
        finally:
            flow.close()

    @overload
    async def benchmark(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: Literal[True] = True,
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> BenchmarkResult: ...

    @overload
    async def benchmark(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: Literal[False],
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> BenchmarkResult | Job: ...

    async def benchmark(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: bool = True,
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> BenchmarkResult | Job:
        """Run a benchmark (or fetch it from the cache): ``POST /v1/benchmarks``."""
        body = BENCHMARK.body(dataset, fields)
        return cast(
            "BenchmarkResult | Job",
            await self._run(self._create(BENCHMARK, body, wait, progress, wait_timeout)),
        )

    @overload
    async def sweep(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: Literal[True] = True,
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> SweepResult: ...

    @overload
    async def sweep(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: Literal[False],
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> SweepResult | Job: ...

    async def sweep(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: bool = True,
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> SweepResult | Job:
        """Choose k: a sweep over k (or fetched from the cache), ``POST /v1/sweeps``."""
        body = SWEEP.body(dataset, fields)
        return cast(
            "SweepResult | Job",
            await self._run(self._create(SWEEP, body, wait, progress, wait_timeout)),
        )

    @overload
    async def stability(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: Literal[True] = True,
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> StabilityResult: ...

    @overload
    async def stability(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: Literal[False],
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> StabilityResult | Job: ...

    async def stability(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: bool = True,
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> StabilityResult | Job:
        """A benchmark under several seeds: ``POST /v1/stability``."""
        body = STABILITY.body(dataset, fields)
        return cast(
            "StabilityResult | Job",
            await self._run(self._create(STABILITY, body, wait, progress, wait_timeout)),
        )

    async def get(self, kind: str, result_id: str) -> Any:
        """A stored result: ``kind`` is ``benchmark``, ``sweep`` or ``stability``."""
        return await self._run(self._get(KINDS[kind], result_id))

    async def get_benchmark(self, benchmark_id: str) -> BenchmarkResult:
        """A stored benchmark: ``GET /v1/benchmarks/{benchmark_id}``."""
        return cast(BenchmarkResult, await self._run(self._get(BENCHMARK, benchmark_id)))

    async def table(self, result_id: str, kind: str = "benchmark") -> str:
        """A stored result as a table (its ``text/plain`` form)."""
        return await self._run(self._text(f"{KINDS[kind].path}/{result_id}", "text/plain"))

    async def report(self, result_id: str, kind: str = "benchmark") -> str:
        """A stored result as one self-contained HTML page."""
        return await self._run(self._text(f"{KINDS[kind].path}/{result_id}/report", "text/html"))

    async def plot(self, result_id: str, init: str | None = None, kind: str = "benchmark") -> bytes:
        """The plot as PNG bytes: a benchmark's decision boundaries (one strategy's panel
        with ``init``), or a sweep's scores against k."""
        params = None if init is None else {"init": init}
        return await self._run(self._bytes(f"{KINDS[kind].path}/{result_id}/plot.png", params))

    async def benchmarks(self, limit: int = 20) -> list[BenchmarkSummary]:
        """The stored benchmarks (the caller's), newest first, at most ``limit``."""
        return await self._run(self._benchmarks(limit))

    async def delete(self, kind: str, item_id: str) -> None:
        """Delete a ``benchmark`` (with its models and plots) or a ``dataset``."""
        path = DATASETS_PATH if kind == "dataset" else KINDS[kind].path
        await self._run(self._delete(f"{path}/{item_id}"))

    async def get_job(self, job_id: str) -> Job:
        """A job's state and progress: ``GET /v1/jobs/{job_id}``."""
        return await self._run(self._get_job(job_id))

    async def jobs(self, state: str | None = None, limit: int = 20) -> list[Job]:
        """The jobs (the caller's), newest first; only those in ``state`` if given."""
        return await self._run(self._jobs(state, limit))

    async def follow(self, job_id: str, progress: ProgressCallback | None = None) -> Any:
        """Follow a job to its end; its result, or its problem raised."""
        return await self._run(self._follow_id(job_id, progress))

    async def cancel_job(self, job_id: str) -> Job:
        """Cancel a queued or running job; the job as it is then."""
        return await self._run(self._cancel_job(job_id))

    async def upload(
        self,
        data: str | os.PathLike[str] | bytes | Any,
        media_type: str | None = None,
        label_column: str | None = None,
        name: str | None = None,
        categorical: Sequence[str] | None = None,
        weight_column: str | None = None,
    ) -> DatasetInfo:
        """Upload a data file (its media type from its extension, its name the file's),
        raw bytes of ``media_type``, a NumPy array, a pandas DataFrame or a scipy.sparse
        matrix (kept sparse); ``name`` names the dataset. For CSV and Parquet,
        ``categorical`` names columns to treat as categories and ``weight_column`` the
        column of each row's ``sample_weight``."""
        return await self._run(
            self._upload(data, media_type, label_column, name, categorical, weight_column)
        )

    async def datasets(self) -> list[DatasetInfo]:
        """The built-in datasets and every uploaded one."""
        return await self._run(self._datasets())

    async def dataset(self, dataset_id: str) -> DatasetInfo:
        """One dataset's shape, labels and format."""
        return await self._run(self._dataset(dataset_id))

    async def model(self, model_id: str) -> ModelInfo:
        """A fitted model: its centres and scaler."""
        return await self._run(self._model(model_id))

    async def predict(self, model_id: str, X: Any) -> Prediction:
        """Each sample's nearest centre under a fitted model, and its distance to it."""
        return await self._run(self._predict(model_id, X))

    async def anomalies(self, model_id: str, X: Any, contamination: float = 0.01) -> Anomalies:
        """Each sample's centre and distance, flagged past the (1 - contamination)
        quantile of the training rows' distances."""
        return await self._run(self._anomalies(model_id, X, contamination))

    async def export(self, model_id: str) -> bytes:
        """The model's whole pipeline as ONNX bytes, for onnxruntime anywhere."""
        return await self._run(self._export(model_id))
