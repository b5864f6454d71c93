"""From a request to a stored benchmark: resolve the data, hash, compute once, store."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import math
import os
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, cast

import numpy as np
import orjson
from anyio import to_thread
from pydantic import BaseModel

from service import benchmark as bm
from service import processes
from service.compute import ComputePool, timed_out
from service.datasets import (
    BUILTIN_LOADERS,
    DatasetInfo,
    DatasetStore,
    is_id,
    store_builtin,
    unknown_dataset,
)
from service.errors import (
    ComputeCancelledError,
    ComputeInProgressError,
    ComputeTimeoutError,
    DatasetNotFoundError,
    InvalidParameterError,
    ModelNotFoundError,
    ServiceError,
    StorageError,
    StrategyNotInBenchmarkError,
    WorkerDiedError,
)
from service.executors import Executor, LocalExecutor
from service.formats import DataLimits, Upload, import_upload
from service.inline import (
    anomalies_in_worker,
    benchmark_body_in_worker,
    predict_in_worker,
    request_body_in_worker,
    store_inline,
    validate,
)
from service.onnx_export import model_to_onnx
from service.plotting import PanelSpec, render_boundaries_from_file
from service.result_backend import ResultBackend
from service.schemas import BenchmarkRequest, StrategyName, StrategySpec
from service.store import StoredBenchmark
from service.tables import DEFAULT_MISSING, check_missing

logger = logging.getLogger(__name__)

# The store's kind for a model's ONNX export, keyed by model id.
ONNX_KIND = "onnx"
# Request bodies remembered for hot hits: how many, and how large each at most.
KNOWN_BODIES = 4096
KNOWN_BODY_MAX_BYTES = 4096

T = TypeVar("T")
D = TypeVar("D", bound=BaseModel)


class DataSource(Protocol):
    """The data fields of a request: a dataset's name or id, or inline ``X`` and ``y``."""

    dataset: str | None
    X: Any
    y: list[int | str] | None


# Whether the caller may name an uploaded dataset by its id (tenants: one it holds).
MayUse = Callable[[str], Awaitable[bool]]

# Hears a computation's steps: (steps done, steps in all, stage).
Progress = Callable[[int, int, str], None]
# Computes a sweep's or a stability run's JSON answer, telling a Progress its steps.
ComputeDocument = Callable[[Progress], Awaitable[bytes]]


@dataclass(frozen=True)
class Step(Generic[T]):
    """One executor task of a computation: ``fn(*args)`` in a worker, ``stage`` its name
    in the progress a job shows."""

    stage: str
    fn: Callable[..., T]
    args: tuple[Any, ...]


def document_flight(kind: str, key: str) -> str:
    """The name under which a sweep or stability run (``kind``) is computed: in flight,
    in the lease across processes, and in the failures remembered."""
    return f"{kind}:{key}"


@dataclass
class EngineStats:
    hits: int = 0
    misses: int = 0
    computations: int = 0


class FailureMemory:
    """Questions whose computation timed out or whose worker was killed, for ``ttl_s``.

    Asked again at once, such a question would take a worker for the same answer (or
    kill it again): the retry gets the remembered problem at once instead, with the
    seconds left as ``Retry-After``.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._failed: OrderedDict[str, tuple[float, ServiceError]] = OrderedDict()

    def remember(self, key: str, error: ServiceError) -> None:
        if self.ttl_s <= 0:
            return
        error.retry_after = math.ceil(self.ttl_s)
        self._failed[key] = (time.monotonic() + self.ttl_s, error)
        self._failed.move_to_end(key)
        while len(self._failed) > self.MAX_ENTRIES:
            self._failed.popitem(last=False)

    def check(self, key: str) -> None:
        """Raise the problem remembered for ``key``, if it is still remembered."""
        entry = self._failed.get(key)
        if entry is None:
            return
        until, error = entry
        left = until - time.monotonic()
        if left <= 0:
            del self._failed[key]
            return
        again = copy.copy(error)
        again.detail = (
            f"{error.detail} [this same request failed {self.ttl_s - left:.0f} s ago and is "
            f"not computed again for {left:.0f} s]"
        )
        again.retry_after = math.ceil(left)
        raise again

    async def guard(self, key: str, work: Coroutine[Any, Any, T]) -> T:
        """Await ``work``, remembering its failure when it is one to remember."""
        try:
            return await work
        except ComputeTimeoutError as exc:
            self.remember(key, exc)
            raise
        except WorkerDiedError as exc:
            if exc.killed:
                self.remember(key, exc)
            raise


@dataclass(frozen=True)
class ResolvedBenchmark:
    id: str
    dataset: DatasetInfo
    params: bm.BenchmarkParams


class BenchmarkEngine:
    """Owns the dataset store, the result store and the compute pool."""

    def __init__(
        self,
        datasets: DatasetStore,
        results: ResultBackend,
        pool: ComputePool,
        data_pool: ComputePool | None = None,
        *,
        limits: DataLimits | None = None,
        failure_ttl_s: float = 0.0,
        predict_max_distances: int = 2**62,
        stability_max_labels: int = 2**62,
        executor: Executor | None = None,
    ) -> None:
        self.datasets = datasets
        self.limits = limits or DataLimits()
        self.predict_max_distances = predict_max_distances
        self.stability_max_labels = stability_max_labels
        self.results = results
        # Two lanes: fits and plots in ``pool``; decoding uploads and bodies and
        # predictions in ``data_pool``, so that small work never waits behind a benchmark.
        self.pool = pool
        self.data_pool = data_pool or pool
        # Where benchmark fits run, one task per strategy: the local pool, or a cluster.
        self.executor = executor or LocalExecutor(pool)
        self._listeners: dict[str, list[Progress]] = {}
        self.failures = FailureMemory(failure_ttl_s)
        self.stats = EngineStats()
        self._inflight: dict[str, asyncio.Task[Any]] = {}
        self._owner = f"{os.getpid()}-{uuid.uuid4().hex}"
        self._known_ids: OrderedDict[bytes, ResolvedBenchmark] = OrderedDict()

    def remember(self, raw: bytes, job: ResolvedBenchmark) -> None:
        """Remember which benchmark a small request body names, for :meth:`hot_hit`."""
        if len(raw) > KNOWN_BODY_MAX_BYTES:
            return
        self._known_ids[raw] = job
        self._known_ids.move_to_end(raw)
        while len(self._known_ids) > KNOWN_BODIES:
            self._known_ids.popitem(last=False)

    def hot_hit(self, raw: bytes) -> StoredBenchmark | None:
        """The cached answer to body bytes seen before, if it is in memory; else None.

        Only a shortcut to a hit: anything else goes the whole way (parse, resolve, hash).
        """
        if len(raw) > KNOWN_BODY_MAX_BYTES:
            return None  # never remembered; and hashing a large body would hold the loop
        job = self._known_ids.get(raw)
        # An uploaded dataset may have been deleted since (by any process): then the
        # request is answered as it would be the first time.
        if job is None or not self.datasets.exists(job.dataset):
            return None
        entry = self._from_memory(job.id)
        if entry is not None:
            self.stats.hits += 1
        return entry

    def _from_memory(self, benchmark_id: str) -> StoredBenchmark | None:
        entry = self.results.peek(benchmark_id)
        if entry is not None and self.results.touch_due(benchmark_id):
            # Best effort, off the event loop: the LRU order on disk.
            asyncio.get_running_loop().run_in_executor(None, self.results.touch, benchmark_id)
        return entry

    async def resolve_body(
        self, body: bytes | Path, *, may_use: MayUse | None = None
    ) -> ResolvedBenchmark:
        """Read a benchmark request's JSON body and resolve it.

        ``may_use(dataset_id)`` says whether the caller may name an uploaded dataset; with
        it (a tenant), inline data is not pruned here: each tenant's is bounded on its own
        (:meth:`service.tenants.Tenancy.claim_dataset`).

        A large body (inline data) arrives spilled to a file, and is decoded and stored
        by a data-lane worker: decoding holds the GIL for seconds, which on the event
        loop would stall every request.
        """
        if isinstance(body, bytes):
            request = validate(BenchmarkRequest, body)
            return await self.resolve(request, may_use=may_use)
        request, dataset = await self.data_pool.run(
            benchmark_body_in_worker,
            body,
            self.datasets.root,
            self.limits,
            may_use is None,
        )
        return await self.resolve(request, dataset, may_use=may_use)

    @property
    def scratch_dir(self) -> Path:
        return self.datasets.root.parent / "tmp"

    @contextlib.asynccontextmanager
    async def scratch_file(self, prefix: str) -> AsyncIterator[Path]:
        """A path under ``<data_dir>/tmp`` for the caller to fill, removed on exit.

        Its name carries this process's id, so that :meth:`clean_scratch` knows whose
        it is when several processes share the data directory.
        """
        self.scratch_dir.mkdir(mode=0o700, exist_ok=True)
        path = self.scratch_dir / f"{prefix}-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def clean_scratch(self) -> int:
        """Remove scratch files left by processes that are gone (a crash, a kill -9).

        Returns how many were removed.
        """
        removed = 0
        if not self.scratch_dir.is_dir():
            return removed
        for path in self.scratch_dir.iterdir():
            match = _SCRATCH_NAME.fullmatch(path.name)
            if match is not None and processes.pid_alive(int(match["pid"])):
                continue
            path.unlink(missing_ok=True)
            removed += 1
        if removed:
            logger.warning("removed %d scratch file(s) left by stopped processes", removed)
        return removed

    async def resolve(
        self,
        request: BenchmarkRequest,
        dataset: DatasetInfo | None = None,
        *,
        may_use: MayUse | None = None,
    ) -> ResolvedBenchmark:
        """Apply defaults, validate against the data, and compute the request hash.

        ``dataset`` is the data already stored for the request, if any.
        """
        if dataset is None:
            dataset = await self._resolve_dataset(request, may_use)
        n_clusters = bm.default_n_clusters(request.n_clusters, dataset.n_labels)
        strategies = strategies_of(request.strategies)
        left_out: tuple[str, ...] = ()
        if "strategies" not in request.model_fields_set:
            # Defaults the client never asked for must not fail the request: those that
            # cannot run here are left out, with a warning. A strategy named still gets 422.
            left_out = tuple(
                s.init
                for s in strategies
                if bm.cannot_run(
                    s.init, n_clusters, request.estimator, *dataset.fit_shape(request.missing)
                )
            )
            strategies = tuple(s for s in strategies if s.init not in left_out)
        params = bm.BenchmarkParams(
            dataset=dataset.id,
            n_clusters=n_clusters,
            strategies=strategies,
            random_state=request.random_state,
            scale=request.scale,
            algorithm=request.algorithm,
            max_iter=request.max_iter,
            tol=float(request.tol),
            silhouette_sample_size=request.silhouette_sample_size,
            estimator=request.estimator,
            left_out=left_out,
            missing=request.missing,
            normalize=request.normalize,
        )
        check_missing(dataset.table_columns(), params.missing, dataset.n_samples)
        bm.check_params(params, *dataset.fit_shape(params.missing))
        return ResolvedBenchmark(id=bm.benchmark_id(params), dataset=dataset, params=params)

    async def resolve_data(
        self, model: type[D], body: bytes | Path, *, may_use: MayUse | None = None
    ) -> tuple[D, DatasetInfo]:
        """Read a request body with data fields (a sweep's, a stability run's) and resolve
        its dataset, as :meth:`resolve_body` does for a benchmark."""
        if isinstance(body, bytes):
            request = validate(model, body)
            return request, await self._resolve_dataset(cast(DataSource, request), may_use)
        request, dataset = await self.data_pool.run(
            request_body_in_worker, model, body, self.datasets.root, self.limits, may_use is None
        )
        if dataset is None:
            dataset = await self._resolve_dataset(cast(DataSource, request), may_use)
        return request, dataset

    async def cached_document(self, kind: str, key: str) -> bytes | None:
        """A stored sweep or stability run (``kind``), from memory or disk, or None."""
        return await to_thread.run_sync(self.results.get_document, kind, key)

    async def get_or_compute_document(
        self, kind: str, key: str, compute: ComputeDocument
    ) -> tuple[bytes, bool]:
        """The stored answer of kind ``kind`` under ``key``, computed once by ``compute``
        however many ask at once (in this process, and across processes by a lease).

        Returns the JSON bytes and whether they came from the cache.
        """
        # Not counted in self.stats' hits and misses: those are the benchmark cache's.
        hit = await to_thread.run_sync(self.results.get_document, kind, key)
        if hit is not None:
            return hit, True
        flight = document_flight(kind, key)
        self.failures.check(flight)
        return await self._once(flight, lambda: self._start_document(kind, key, compute))

    def document_computation(
        self, kind: str, key: str, compute: ComputeDocument, progress: Progress
    ) -> asyncio.Task[tuple[bytes, bool]]:
        """The task computing the answer of kind ``kind`` under ``key`` (the one in flight,
        a synchronous request's too, or a new one); ``progress`` hears its steps, as
        :meth:`computation` does for a benchmark."""
        return self._follow(
            document_flight(kind, key), lambda: self._start_document(kind, key, compute), progress
        )

    def _start_document(
        self, kind: str, key: str, compute: ComputeDocument
    ) -> Coroutine[Any, Any, tuple[bytes, bool]]:
        flight = document_flight(kind, key)
        return self._admitted(flight, self._compute_document(kind, key, compute), executor=True)

    async def _compute_document(
        self, kind: str, key: str, compute: ComputeDocument
    ) -> tuple[bytes, bool]:
        # A lease across the processes on the data directory, as for a benchmark: short
        # and renewed, so that a job queued behind others does not outlive it.
        store = self.results
        flight = document_flight(kind, key)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.pool.timeout_s
        while not await to_thread.run_sync(store.try_lease, flight, self._owner, store.lease_ttl_s):
            if loop.time() >= deadline:  # nobody waits past their own limit
                raise ComputeInProgressError(
                    f"another request is computing {kind} {key} and it did not finish "
                    f"within this request's limit of {self.pool.timeout_s:g} s "
                    "(CLUSTERBENCH_TIMEOUT_S); ask again later for its result",
                    retry_after=max(1, round(min(self.pool.timeout_s, 30.0))),
                )
            await asyncio.sleep(0.05)
            done = await to_thread.run_sync(store.get_document, kind, key)
            if done is not None:
                return done, True
        renewing = asyncio.create_task(self._renew_lease(flight))
        try:
            done = await to_thread.run_sync(store.get_document, kind, key)
            if done is not None:
                return done, True
            body = await compute(functools.partial(self._report, flight))
            await to_thread.run_sync(store.put_document, kind, key, body)
            return body, False
        finally:
            renewing.cancel()
            await to_thread.run_sync(store.release, flight, self._owner)

    async def run_steps(
        self,
        dataset: DatasetInfo,
        steps: Sequence[Step[T]],
        spent: Callable[[T], float],
        report: Progress,
    ) -> list[T]:
        """One executor task per step, in order, within one timeout for them all.

        ``report(done, total, stage)`` hears each step's start, the step's label as the
        stage. The budget is spent by the work itself as ``spent`` reads it from a
        step's result (the fit times, measured in the workers), not by the time a task
        waits in the queue behind other computations' tasks.
        """
        left = self.executor.timeout_s
        results: list[T] = []
        for index, step in enumerate(steps):
            report(index, len(steps), step.stage)
            if results:
                left -= spent(results[-1])
            if left <= 0:
                raise timed_out(self.executor.timeout_s)
            try:
                result = await self.executor.submit(step.fn, *step.args, timeout_s=left)
            except FileNotFoundError:
                raise DatasetNotFoundError(
                    f"the dataset {dataset.id} was deleted while this computation was queued"
                ) from None
            results.append(result)
        return results

    async def _resolve_dataset(
        self, request: DataSource, may_use: MayUse | None = None
    ) -> DatasetInfo:
        if request.X is not None:
            return await to_thread.run_sync(
                store_inline, self.datasets, request.X, request.y, self.limits, may_use is None
            )
        name = request.dataset or "digits"
        if name in BUILTIN_LOADERS:
            return await self.builtin(name)
        if is_id(name) and (may_use is None or await may_use(name)):
            try:
                info = self.datasets.get(name)
            except DatasetNotFoundError:
                pass
            else:
                self.datasets.touch(info)
                return info
        raise unknown_dataset(name)

    async def builtin(self, name: str) -> DatasetInfo:
        """The stored copy of the built-in dataset ``name``: on this process's first use
        a data worker loads it (scikit-learn) and stores it (README "Performance")."""
        info = await to_thread.run_sync(self.datasets.stored_builtin, name)
        if info is not None:
            return info

        async def store() -> DatasetInfo:
            stored = await self.data_pool.run(store_builtin, self.datasets.root, name)
            self.datasets.remember_builtin(name, stored)
            return stored

        # Once, however many requests name it first at the same time.
        return await self._once(f"builtin:{name}", store)

    async def import_file(
        self,
        path: Path,
        fmt: str,
        *,
        label_column: str | None,
        name: str | None,
        private: bool = False,
        categorical: frozenset[str] = frozenset(),
        weight_column: str | None = None,
    ) -> Upload:
        """Read an uploaded file and store it: the info, whether it is new, the warnings.

        In a compute worker: parsing a large file would otherwise hold the event loop.
        ``private``: the name and columns stay out of the shared bytes (see
        :func:`service.formats.import_upload`).
        """
        return await self.data_pool.run(
            functools.partial(
                import_upload,
                private=private,
                max_expansion=self.limits.max_expansion,
                datasets_max_bytes=self.limits.datasets_max_bytes,
                max_sparse_features=self.limits.max_sparse_features,
                categorical=categorical,
                weight_column=weight_column,
            ),
            path,
            fmt,
            label_column,
            name,
            self.datasets.root,
            self.limits.max_cells,
            self.limits.max_dataset_bytes,
        )

    async def predict(self, model_id: str, body: bytes | Path) -> bytes:
        """The JSON answer of ``model_id`` to a predict request's body.

        In a data-lane worker, whatever the body's size: the distances to the centres
        would otherwise be computed in the server process.
        """
        model = await self.get_model(model_id)
        return await self.data_pool.run(predict_in_worker, body, model, self.predict_max_distances)

    async def anomalies(self, model_id: str, body: bytes | Path) -> bytes:
        """The JSON answer of ``model_id`` to an anomalies request's body, in a data-lane
        worker and bounded as :meth:`predict` is."""
        model = await self.get_model(model_id)
        return await self.data_pool.run(
            anomalies_in_worker, body, model, self.predict_max_distances
        )

    async def get_or_export_onnx(self, model_id: str) -> bytes:
        """``model_id``'s pipeline as ONNX bytes: converted once, in a worker, then kept in
        the store as a document (as a sweep's plot is)."""
        model = await self.get_model(model_id)

        async def export(_: Progress) -> bytes:  # one step: nobody follows its progress
            onnx: bytes = await self.pool.run(model_to_onnx, model)
            return onnx

        onnx, _ = await self.get_or_compute_document(ONNX_KIND, model_id, export)
        return onnx

    async def cached(self, benchmark_id: str) -> StoredBenchmark | None:
        """The stored benchmark: from memory on the event loop, else from disk in a thread."""
        entry = self._from_memory(benchmark_id)
        if entry is not None:
            return entry
        return await to_thread.run_sync(self.results.get, benchmark_id)

    async def get_or_compute(self, job: ResolvedBenchmark) -> tuple[StoredBenchmark, bool]:
        """The stored benchmark for ``job``, computing it once however many ask at once.

        Returns the entry and whether it came from the cache.
        """
        hit = await self.cached(job.id)
        if hit is not None:
            self.stats.hits += 1
            return hit, True
        self.failures.check(job.id)
        self.stats.misses += 1
        return await self._once(
            job.id, lambda: self._admitted(job.id, self._compute(job), executor=True)
        )

    async def _admitted(
        self, key: str, work: Coroutine[Any, Any, T], *, executor: bool = False
    ) -> T:
        """``work`` counted against the pool's bound from its start (the executor's, for
        the fits of benchmarks, sweeps and stability runs, which may run on a cluster).

        Under a burst the refusal (503) comes at once, before the lease and the store
        are touched (it came after 2-5 s when only the pool's submit counted).
        """
        gate = self.executor if executor else self.pool
        try:
            with gate.admitted():
                return await self.failures.guard(key, work)
        finally:
            work.close()  # never started when refused: no "never awaited" warning

    def _flight(self, key: str, start: Callable[[], Coroutine[Any, Any, T]]) -> asyncio.Task[T]:
        """The computation in flight under ``key``, started unless it already runs."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(start())
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return task

    async def _once(self, key: str, start: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Await the computation under ``key``, starting it unless it already runs."""
        task = self._flight(key, start)
        # shield: one waiter giving up must not cancel the computation the others await.
        try:
            result: T = await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and not (current and current.cancelling()):
                # Not this waiter: the computation itself was cancelled (DELETE of its job).
                raise ComputeCancelledError(
                    "the computation of this request was cancelled (its job was deleted) "
                    "before it finished; ask again to compute it"
                ) from None
            raise
        return result

    def computation(
        self, job: ResolvedBenchmark, progress: Progress
    ) -> asyncio.Task[tuple[StoredBenchmark, bool]]:
        """The task computing ``job``: the one in flight, or a new one; ``progress`` hears
        its steps. Cancelling the task stops the computation (and its worker).

        A new task counts against the pool's bound when it starts: it fails at once
        with ComputeBusyError when the pool is full.
        """
        if job.id not in self._inflight:
            self.stats.misses += 1
        return self._follow(
            job.id, lambda: self._admitted(job.id, self._compute(job), executor=True), progress
        )

    def _follow(
        self, key: str, start: Callable[[], Coroutine[Any, Any, T]], progress: Progress
    ) -> asyncio.Task[T]:
        """The computation under ``key`` (see :meth:`_flight`), ``progress`` hearing its
        steps until it ends."""
        task = self._flight(key, start)
        listeners = self._listeners.setdefault(key, [])
        listeners.append(progress)

        def unlisten(_: object) -> None:
            listeners.remove(progress)
            if not listeners and self._listeners.get(key) is listeners:
                del self._listeners[key]

        task.add_done_callback(unlisten)
        return task

    @property
    def owner(self) -> str:
        """This engine's name in leases (and jobs): ``"<pid>-<hex>"``."""
        return self._owner

    def _report(self, key: str, done: int, total: int, stage: str) -> None:
        for listener in self._listeners.get(key, ()):
            listener(done, total, stage)

    async def get_or_render_plot(self, entry: StoredBenchmark, init: str | None) -> bytes:
        """The PNG of ``entry``'s boundary plot (all panels, or the ``init`` one), cached."""
        results = entry.data["results"]
        if init is not None and init not in {r["init"] for r in results}:
            raise StrategyNotInBenchmarkError(
                f"benchmark {entry.id} has no strategy {init!r}; it has "
                + ", ".join(repr(r["init"]) for r in results)
            )
        key = init or "all"
        png = await to_thread.run_sync(self.results.get_plot, entry.id, key)
        if png is not None:
            return png
        flight = f"plot:{entry.id}:{key}"
        self.failures.check(flight)
        return await self._once(flight, lambda: self._admitted(flight, self._render(entry, init)))

    async def _render(self, entry: StoredBenchmark, init: str | None) -> bytes:
        body = entry.data
        dataset = body["dataset"]
        try:
            info = self.datasets.get(dataset["id"])
        except DatasetNotFoundError:
            raise DatasetNotFoundError(
                f"the dataset {dataset['id']} of this benchmark was deleted: "
                "the plot cannot be drawn"
            ) from None
        width = info.fit_shape()[1]  # a table's categories one-hot encoded
        if width < 2:
            raise InvalidParameterError(
                f"the boundary plot needs at least 2 features; this dataset has {width}",
                errors=[{"loc": ["dataset"], "msg": f"{width} feature"}],
            )
        estimator = body["params"].get("estimator", bm.DEFAULT_ESTIMATOR)
        given = {s["init"]: s.get("centers") for s in body["params"]["strategies"]}
        specs = [
            PanelSpec(
                init=r["init"],
                n_init=r["n_init"],
                start_centers=await self._panel_start(r, given.get(r["init"])),
                estimator=estimator,
            )
            for r in body["results"]
            if init is None or r["init"] == init
        ]
        X_path, _ = self.datasets.files(info)
        png = await self.pool.run(
            functools.partial(
                render_boundaries_from_file,
                n_clusters=body["n_clusters"],
                random_state=body["params"]["random_state"],
                dataset_name=info.name,
                dataset_id=info.id,
                feature_names=info.feature_names,
                missing=body["params"].get("missing", DEFAULT_MISSING),
            ),
            X_path,
            specs,
        )
        await to_thread.run_sync(self.results.put_plot, entry.id, init or "all", png)
        return png

    async def _panel_start(
        self, result: dict[str, Any], centers: list[list[float]] | None
    ) -> np.ndarray | None:
        """Where a panel's 2-D fit starts: the model's centres for ``pca`` (as before),
        the given centres for ``custom``, in the feature space; None for the others."""
        if result["init"] == "pca":
            return (await self.get_model(result["model_id"])).centers_in_feature_space()
        if result["init"] == "custom" and centers is not None:
            return np.asarray(centers, dtype=np.float64)
        return None

    async def _compute(self, job: ResolvedBenchmark) -> tuple[StoredBenchmark, bool]:
        # Other processes on the same data directory may be computing the same question:
        # a lease in the store lets one compute while the others wait for its result. The
        # lease is short and renewed while the computation runs, and the store frees at
        # once a lease whose process died, so a killed owner never leaves the question
        # locked (it did for timeout_s + 60 s). Nobody waits past their own timeout.
        store = self.results
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.pool.timeout_s
        delay = 0.05
        while not await to_thread.run_sync(store.try_lease, job.id, self._owner, store.lease_ttl_s):
            if loop.time() >= deadline:
                raise ComputeInProgressError(
                    f"another request is computing benchmark {job.id} and it did not finish "
                    f"within this request's limit of {self.pool.timeout_s:g} s "
                    "(CLUSTERBENCH_TIMEOUT_S); ask again later for its result",
                    retry_after=max(1, round(min(self.pool.timeout_s, 30.0))),
                )
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.5)
            done = await to_thread.run_sync(store.get, job.id)
            if done is not None:
                return done, True
        renewing = asyncio.create_task(self._renew_lease(job.id))
        try:
            done = await to_thread.run_sync(store.get, job.id)
            if done is not None:
                return done, True
            X_path, y_path = self.datasets.files(job.dataset)
            self.stats.computations += 1
            outcomes = await self._fit_strategies(job, X_path, y_path)
            entry = build_entry(job, outcomes)
            self._report(job.id, len(outcomes), len(outcomes), "storing")
            await to_thread.run_sync(store.put, entry)
            return entry, False
        finally:
            renewing.cancel()
            await to_thread.run_sync(store.release, job.id, self._owner)

    async def _fit_strategies(
        self, job: ResolvedBenchmark, X_path: Path, y_path: Path | None
    ) -> list[bm.StrategyOutcome]:
        """One executor task per strategy, in order, within one timeout for them all."""
        steps = [
            Step(strategy.init, bm.run_strategy_from_files, (X_path, y_path, job.params, index))
            for index, strategy in enumerate(job.params.strategies)
        ]
        return await self.run_steps(
            job.dataset,
            steps,
            lambda outcome: outcome.fit_time,
            functools.partial(self._report, job.id),
        )

    async def _renew_lease(self, key: str) -> None:
        """Keep this process's lease on ``key`` alive until cancelled."""
        store = self.results
        while True:
            await asyncio.sleep(store.lease_renew_s)
            try:
                renewed = await to_thread.run_sync(
                    store.renew_lease, key, self._owner, store.lease_ttl_s
                )
            except StorageError:
                continue  # the store is away for a while (Redis restarting): renew again
            if not renewed:
                logger.warning("lost the lease on %s: another process may compute it too", key)

    async def get_model(self, model_id: str) -> bm.FittedModel:
        model = await to_thread.run_sync(self.results.get_model, model_id)
        if model is None:
            raise ModelNotFoundError(f"no model with id {model_id}")
        return model


_SCRATCH_NAME = re.compile(r"[a-z]+-(?P<pid>[0-9]+)-[0-9a-f]{32}")


def strategies_of(items: list[StrategyName | StrategySpec]) -> tuple[bm.Strategy, ...]:
    """The request's strategies with their defaults applied."""
    return tuple(
        bm.Strategy(init=s, n_init=bm.DEFAULT_N_INIT[s])
        if isinstance(s, str)
        else bm.Strategy(
            init=s.init,
            n_init=s.n_init or bm.DEFAULT_N_INIT[s.init],
            # + 0.0: -0.0 starts KMeans where 0.0 does, and must hash the same.
            centers=None
            if s.centers is None
            else tuple(tuple(v + 0.0 for v in row) for row in s.centers),
        )
        for s in items
    )


def build_entry(job: ResolvedBenchmark, outcomes: list[bm.StrategyOutcome]) -> StoredBenchmark:
    results = []
    models = {}
    for strategy, outcome in zip(job.params.strategies, outcomes, strict=True):
        mid = bm.model_id(job.params, strategy)
        names = job.dataset.feature_names
        if outcome.model.preprocessing is None:
            # A table's model names its encoded columns itself.
            outcome.model.feature_names = None if names is None else tuple(names)
        models[mid] = outcome.model
        results.append(
            {
                "init": outcome.init,
                "n_init": outcome.n_init,
                "fit_time": outcome.fit_time,
                "inertia": outcome.inertia,
                "n_iter": outcome.n_iter,
                **outcome.scores,
                "model_id": mid,
                "warnings": outcome.warnings,
            }
        )
    body = {
        "id": job.id,  # first: StoredBenchmark relies on it
        "cached": False,
        "dataset": job.dataset.public(job.params.missing),
        "n_clusters": job.params.n_clusters,
        "params": job.params.as_dict(),
        "score_space": "input",
        "results": results,
        "warnings": job.params.warnings(*job.dataset.fit_shape(job.params.missing)),
        # The boundary plot needs 2 features: data with one has none to point to.
        "plot_url": (
            f"/v1/benchmarks/{job.id}/plot.png"
            if job.dataset.fit_shape(job.params.missing)[1] >= 2
            else None
        ),
        "versions": dict(bm.VERSIONS),
    }
    return StoredBenchmark.from_body(job.id, orjson.dumps(body), models)
