"""The blocking client."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, Literal, cast, overload

import httpx

from service.client.flows import _chunks, _Flow, _Notify, _Operations, _Request, _sent_as, _Sleep
from service.client.kinds import (
    BENCHMARK,
    CONNECT_RETRIES,
    DATASETS_PATH,
    DEFAULT_TIMEOUT,
    KINDS,
    STABILITY,
    SWEEP,
    ProgressCallback,
    T,
)
from service.schemas import (
    Anomalies,
    BenchmarkResult,
    BenchmarkSummary,
    DatasetInfo,
    Job,
    ModelInfo,
    Prediction,
    StabilityResult,
    SweepResult,
)


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
