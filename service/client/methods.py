"""The clients' public methods, written once: each is the flow it runs (:mod:`flows`), with
the method's parameters and docstring. Looked up on :class:`~service.client.Client` it runs
the flow blocking; on :class:`~service.client.AsyncClient`, awaited. A type checker sees the
same: each method answers its result in the first and a coroutine of it in the second."""

from __future__ import annotations

import inspect
import os
import types
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, Generic, Literal, ParamSpec, Protocol, TypeVar, cast, overload

import httpx

from service.client.flows import _Flow, _Operations
from service.client.kinds import (
    BENCHMARK,
    DATASETS_PATH,
    DEFAULT_TIMEOUT,
    KINDS,
    STABILITY,
    SWEEP,
    Kind,
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

P = ParamSpec("P")
R = TypeVar("R")
# What a method is to a type checker on the blocking client, and on the async one.
_Blocking = TypeVar("_Blocking", covariant=True)
_Awaited = TypeVar("_Awaited", covariant=True)
_Done = TypeVar("_Done", covariant=True)
_Either = TypeVar("_Either", covariant=True)
_Transport = TypeVar("_Transport")


class _Ask(Protocol[_Done, _Either]):
    """A question's method: its result where it is waited for (the default), else the
    result or the job."""

    @overload
    def __call__(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: Literal[True] = True,
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> _Done: ...

    @overload
    def __call__(
        self,
        dataset: str | DatasetInfo | None = None,
        *,
        wait: Literal[False],
        progress: ProgressCallback | None = None,
        wait_timeout: float | None = None,
        **fields: Any,
    ) -> _Either: ...


class _Method(Generic[_Blocking, _Awaited]):
    """A public method, as the flow it runs: looked up on a client, the function that runs
    the flow the way that client runs flows (its ``_running``), made once per class.

    Parameters
    ----------
    flow : callable
        Called with the client and the method's arguments, the flow to run; its name,
        docstring and parameters are the method's.
    returns : str, optional
        The method's return annotation; by default the flow's, ``_Flow[X]``, as ``X``.
    """

    def __init__(self, flow: Callable[..., _Flow[Any]], returns: str | None = None) -> None:
        self.flow = flow
        self.name = flow.__name__
        # Annotations are postponed: the flow's is the string "_Flow[X]", the method's X.
        annotation = flow.__annotations__["return"]
        self.returns = returns or annotation.removeprefix("_Flow[").removesuffix("]")
        self._made: dict[type[Any], Callable[..., Any]] = {}

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name
        # What a wrong call's TypeError names (the flow is called with the arguments).
        self.flow.__qualname__ = f"{owner.__qualname__}.{name}"

    @overload
    def __get__(self, client: None, owner: type[Any]) -> Callable[..., Any]: ...

    @overload
    def __get__(self, client: _Client[httpx.BaseTransport], owner: type[Any]) -> _Blocking: ...

    @overload
    def __get__(self, client: _Client[httpx.AsyncBaseTransport], owner: type[Any]) -> _Awaited: ...

    def __get__(self, client: _Client[Any] | None, owner: type[Any]) -> Any:
        if owner is _Client:
            # The base runs no flow (help() and inspect look there too): only this.
            return self
        made = self._made.get(owner)
        if made is None:
            made = self._made[owner] = self._make(owner)
        return made if client is None else types.MethodType(made, client)

    def _make(self, owner: type[_Client[Any]]) -> Callable[..., Any]:
        # A function of the class's own, so that help() and inspect see a plain method.
        made: Any = owner._running(self.flow)
        made.__name__ = self.name
        made.__qualname__ = f"{owner.__qualname__}.{self.name}"
        made.__module__ = owner.__module__
        made.__doc__ = self.flow.__doc__
        # typing.get_type_hints reads the annotations, in the flow's module.
        made.__wrapped__ = self.flow
        made.__annotations__ = {
            **{name: a for name, a in self.flow.__annotations__.items() if name != "self"},
            "return": self.returns,
        }
        signature = inspect.signature(self.flow)
        client, *parameters = signature.parameters.values()
        made.__signature__ = signature.replace(
            parameters=[client.replace(annotation=client.empty), *parameters],
            return_annotation=self.returns,
        )
        return cast(Callable[..., Any], made)


def _method(
    flow: Callable[Concatenate[Any, P], _Flow[T]],
) -> _Method[Callable[P, T], Callable[P, Coroutine[Any, Any, T]]]:
    """The public method that runs ``flow``."""
    return _Method(flow)


class _Question(
    _Method[_Ask[R, R | Job], _Ask[Coroutine[Any, Any, R], Coroutine[Any, Any, R | Job]]]
):
    """The method that asks ``kind``'s question (its ``POST``), answered with ``R``."""

    def __init__(self, kind: Kind, doc: str) -> None:
        def ask(
            self: _Operations,
            dataset: str | DatasetInfo | None = None,
            *,
            wait: bool = True,
            progress: ProgressCallback | None = None,
            wait_timeout: float | None = None,
            **fields: Any,
        ) -> _Flow[Any]:
            return self._create(kind, kind.body(dataset, fields), wait, progress, wait_timeout)

        ask.__doc__ = doc
        super().__init__(ask, returns=f"{kind.result.__name__} | Job")


class _Client(_Operations, Generic[_Transport]):
    """The settings and public methods of a client; its subclass opens its connection
    pool and says how a flow is run. How it runs them goes with its transport's type:
    httpx's blocking one, or its async one."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 8,
        max_retry_wait: float = 120.0,
        wait_timeout: float = 3600.0,
        transport: _Transport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, max_retries, max_retry_wait, wait_timeout)
        self._connect(
            transport, base_url=self.base_url, headers=self._default_headers, timeout=timeout
        )

    def _connect(self, transport: _Transport | None, **options: Any) -> None:
        """Open the connection pool with httpx's ``options``, through ``transport`` if
        given, else httpx's own, which retries failed connections."""
        raise NotImplementedError

    @staticmethod
    def _running(flow: Callable[..., _Flow[Any]]) -> Callable[..., Any]:
        """A method that runs the flow ``flow`` makes of the client and its arguments."""
        raise NotImplementedError

    benchmark = _Question[BenchmarkResult](
        BENCHMARK,
        """Run a benchmark (or fetch it from the cache): ``POST /v1/benchmarks``.
        ``dataset`` is a built-in name, an uploaded dataset's id or its :class:`DatasetInfo`;
        ``fields`` are the request's other fields (``X``, ``y``, ``n_clusters``,
        ``strategies``, ...; NumPy arrays are sent as lists). Where the service runs it as
        a job, it is followed to its end with ``progress(job)`` called at each change, for
        at most ``wait_timeout`` seconds; with ``wait=False`` the job is returned at once.
        """,
    )
    sweep = _Question[SweepResult](
        SWEEP, """Choose k: a sweep over k (or fetched from the cache), ``POST /v1/sweeps``."""
    )
    stability = _Question[StabilityResult](
        STABILITY, """A benchmark under several seeds: ``POST /v1/stability``."""
    )

    @_method
    def get(self, kind: str, result_id: str) -> _Flow[Any]:
        """A stored result: ``kind`` is ``benchmark``, ``sweep`` or ``stability``."""
        return self._get(KINDS[kind], result_id)

    @_method
    def get_benchmark(self, benchmark_id: str) -> _Flow[BenchmarkResult]:
        """A stored benchmark: ``GET /v1/benchmarks/{benchmark_id}``."""
        return cast("_Flow[BenchmarkResult]", self._get(BENCHMARK, benchmark_id))

    @_method
    def table(self, result_id: str, kind: str = "benchmark") -> _Flow[str]:
        """A stored result as a table (its ``text/plain`` form)."""
        return self._text(f"{KINDS[kind].path}/{result_id}", "text/plain")

    @_method
    def report(self, result_id: str, kind: str = "benchmark") -> _Flow[str]:
        """A stored result as one self-contained HTML page."""
        return self._text(f"{KINDS[kind].path}/{result_id}/report", "text/html")

    @_method
    def plot(
        self, result_id: str, init: str | None = None, kind: str = "benchmark"
    ) -> _Flow[bytes]:
        """The plot as PNG bytes: a benchmark's decision boundaries (one strategy's panel
        with ``init``), or a sweep's scores against k."""
        params = None if init is None else {"init": init}
        return self._bytes(f"{KINDS[kind].path}/{result_id}/plot.png", params)

    @_method
    def benchmarks(self, limit: int = 20) -> _Flow[list[BenchmarkSummary]]:
        """The stored benchmarks (the caller's), newest first, at most ``limit``."""
        return self._benchmarks(limit)

    @_method
    def delete(self, kind: str, item_id: str) -> _Flow[None]:
        """Delete a ``benchmark`` (with its models and plots) or a ``dataset``."""
        path = DATASETS_PATH if kind == "dataset" else KINDS[kind].path
        return self._delete(f"{path}/{item_id}")

    @_method
    def get_job(self, job_id: str) -> _Flow[Job]:
        """A job's state and progress: ``GET /v1/jobs/{job_id}``."""
        return self._get_job(job_id)

    @_method
    def jobs(self, state: str | None = None, limit: int = 20) -> _Flow[list[Job]]:
        """The jobs (the caller's), newest first; only those in ``state`` if given."""
        return self._jobs(state, limit)

    @_method
    def follow(self, job_id: str, progress: ProgressCallback | None = None) -> _Flow[Any]:
        """Follow a job to its end; its result, or its problem raised."""
        return self._follow_id(job_id, progress)

    @_method
    def cancel_job(self, job_id: str) -> _Flow[Job]:
        """Cancel a queued or running job; the job as it is then."""
        return self._cancel_job(job_id)

    @_method
    def upload(
        self,
        data: str | os.PathLike[str] | bytes | Any,
        media_type: str | None = None,
        label_column: str | None = None,
        name: str | None = None,
        categorical: Sequence[str] | None = None,
        weight_column: str | None = None,
    ) -> _Flow[DatasetInfo]:
        """Upload a data file (its media type from its extension, its name the file's),
        raw bytes of ``media_type``, a NumPy array, a pandas DataFrame or a scipy.sparse
        matrix (kept sparse); ``name`` names the dataset. For CSV and Parquet,
        ``categorical`` names columns to treat as categories and ``weight_column`` the
        column of each row's ``sample_weight``."""
        return self._upload(data, media_type, label_column, name, categorical, weight_column)

    @_method
    def datasets(self) -> _Flow[list[DatasetInfo]]:
        """The built-in datasets and every uploaded one."""
        return self._datasets()

    @_method
    def dataset(self, dataset_id: str) -> _Flow[DatasetInfo]:
        """One dataset's shape, labels and format."""
        return self._dataset(dataset_id)

    @_method
    def model(self, model_id: str) -> _Flow[ModelInfo]:
        """A fitted model: its centres and scaler."""
        return self._model(model_id)

    @_method
    def predict(self, model_id: str, X: Any) -> _Flow[Prediction]:
        """Each sample's nearest centre under a fitted model, and its distance to it."""
        return self._predict(model_id, X)

    @_method
    def anomalies(self, model_id: str, X: Any, contamination: float = 0.01) -> _Flow[Anomalies]:
        """Each sample's centre and distance, flagged past the (1 - contamination)
        quantile of the training rows' distances."""
        return self._anomalies(model_id, X, contamination)

    @_method
    def export(self, model_id: str) -> _Flow[bytes]:
        """The model's whole pipeline as ONNX bytes, for onnxruntime anywhere."""
        return self._export(model_id)
