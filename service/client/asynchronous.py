"""The asyncio client."""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal, cast, overload

import anyio
import httpx

from service.client.flows import _Flow, _Notify, _Operations, _Request, _sent_as, _Sleep
from service.client.kinds import (
    BENCHMARK,
    CHUNK_BYTES,
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


async def _async_chunks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as source:
        while chunk := await source.read(CHUNK_BYTES):
            yield chunk
