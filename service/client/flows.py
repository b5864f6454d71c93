"""Every operation written once, as a generator that yields what it needs done (send a
request, sleep, report progress) and is sent the answers: the sync and async clients run
the same flows."""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic

import httpx

from service import __version__
from service.client.errors import ClusterbenchError, retry_after
from service.client.kinds import (
    BENCHMARK,
    CHUNK_BYTES,
    DEFAULT_URL,
    KINDS,
    MEDIA_TYPES,
    POLL_FIRST_S,
    POLL_MAX_S,
    RETRY_STATUSES,
    SCIPY_SPARSE,
    Kind,
    ProgressCallback,
    T,
    _plain,
    media_type_of,
)
from service.schemas import (
    Anomalies,
    BenchmarkList,
    BenchmarkSummary,
    DatasetInfo,
    DatasetList,
    Job,
    JobState,
    ModelInfo,
    Prediction,
)


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


class _Steps(Generic[T]):
    """A flow as a client runs it: iterated, the actions it asks for, each sent the
    ``reply`` set meanwhile (a request's answer); then ``value``, what it returned. The
    flow is closed on leaving, whether it ran to its end or not."""

    reply: Any = None
    value: T

    def __init__(self, flow: _Flow[T]) -> None:
        self._flow = flow

    def __enter__(self) -> _Steps[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self._flow.close()

    def __iter__(self) -> Iterator[_Action]:
        try:
            while True:
                action = self._flow.send(self.reply)
                self.reply = None
                yield action
        except StopIteration as stop:
            self.value = stop.value


_JSON = {"Accept": "application/json"}


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
