"""From a request to a stored benchmark: resolve the data, hash, compute once, store."""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import numpy as np
from anyio import to_thread
from pydantic import BaseModel

from service import benchmark as bm
from service import tasks
from service.benchmark import ResolvedBenchmark
from service.compute import ComputePool
from service.datasets import BUILTIN_LOADERS, DatasetInfo, DatasetStore, is_id, unknown_dataset
from service.errors import (
    DatasetNotFoundError,
    InvalidParameterError,
    ModelNotFoundError,
    StrategyNotInBenchmarkError,
)
from service.executors import Executor
from service.formats import DataLimits, Upload
from service.inline import store_inline, validate
from service.memory import keep_recent
from service.params import pace_form
from service.plotting import PanelSpec
from service.result_backend import ResultBackend
from service.runtime import Progress, Runtime, Step
from service.schemas import BenchmarkRequest, BenchmarkResult
from service.store import StoredBenchmark
from service.tables import check_missing

# The store's kind for a model's ONNX export, keyed by model id.
ONNX_KIND = "onnx"
# Request bodies remembered for hot hits: how many, and how large each at most.
KNOWN_BODIES = 4096
KNOWN_BODY_MAX_BYTES = 4096

D = TypeVar("D", bound=BaseModel)


class DataSource(Protocol):
    """The data fields of a request: a dataset's name or id, or inline ``X`` and ``y``."""

    dataset: str | None
    X: Any
    y: list[int | str] | None


# Whether the caller may name an uploaded dataset by its id (tenants: one it holds).
MayUse = Callable[[str], Awaitable[bool]]


@dataclass
class EngineStats:
    hits: int = 0
    misses: int = 0
    computations: int = 0


class BenchmarkEngine(Runtime):
    """The benchmark service on the generic :class:`~service.runtime.Runtime`: owns the
    dataset store, the result store and the compute pool."""

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
        super().__init__(
            results,
            pool,
            datasets.root.parent / "tmp",
            failure_ttl_s=failure_ttl_s,
            executor=executor,
        )
        # Two lanes: fits and plots in ``pool``; decoding uploads and bodies and
        # predictions in ``data_pool``, so that small work never waits behind a benchmark.
        self.data_pool = data_pool or pool
        self.stats = EngineStats()
        self._known_ids: OrderedDict[bytes, ResolvedBenchmark] = OrderedDict()

    def remember(self, raw: bytes, job: ResolvedBenchmark) -> None:
        """Remember which benchmark a small request body names, for :meth:`hot_hit`."""
        if len(raw) > KNOWN_BODY_MAX_BYTES:
            return
        keep_recent(self._known_ids, raw, job, KNOWN_BODIES)

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
            tasks.benchmark_body,
            body,
            self.datasets.root,
            self.limits,
            may_use is None,
        )
        return await self.resolve(request, dataset, may_use=may_use)

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
        strategies = bm.strategies_of(request.strategies)
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
            left_out=left_out,
            **request.fit_params(),
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
            tasks.request_body, model, body, self.datasets.root, self.limits, may_use is None
        )
        if dataset is None:
            dataset = await self._resolve_dataset(cast(DataSource, request), may_use)
        return request, dataset

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
            stored = await self.data_pool.run(tasks.store_builtin, self.datasets.root, name)
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
                tasks.import_upload,
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
        return await self.data_pool.run(tasks.predict, body, model, self.predict_max_distances)

    async def anomalies(self, model_id: str, body: bytes | Path) -> bytes:
        """The JSON answer of ``model_id`` to an anomalies request's body, in a data-lane
        worker and bounded as :meth:`predict` is."""
        model = await self.get_model(model_id)
        return await self.data_pool.run(tasks.anomalies, body, model, self.predict_max_distances)

    async def get_or_export_onnx(self, model_id: str) -> bytes:
        """``model_id``'s pipeline as ONNX bytes: converted once, in a worker, then kept in
        the store as a document (as a sweep's plot is)."""
        model = await self.get_model(model_id)

        async def export(_: Progress) -> tuple[bytes, bytes]:  # one step: nobody follows it
            onnx: bytes = await self.pool.run(tasks.export_onnx, model)
            return onnx, onnx

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

    async def get_or_render_plot(self, entry: StoredBenchmark, init: str | None) -> bytes:
        """The PNG of ``entry``'s boundary plot (all panels, or the ``init`` one), cached."""
        inits = [r.init for r in entry.answer.results]
        if init is not None and init not in inits:
            raise StrategyNotInBenchmarkError(
                f"benchmark {entry.id} has no strategy {init!r}; it has "
                + ", ".join(map(repr, inits))
            )
        key = init or "all"
        png = await to_thread.run_sync(self.results.get_plot, entry.id, key)
        if png is not None:
            return png
        flight = f"plot:{entry.id}:{key}"
        self.failures.check(flight)
        return await self._once(flight, lambda: self._admitted(flight, self._render(entry, init)))

    async def _render(self, entry: StoredBenchmark, init: str | None) -> bytes:
        answer = entry.answer
        try:
            info = self.datasets.get(answer.dataset.id)
        except DatasetNotFoundError:
            raise DatasetNotFoundError(
                f"the dataset {answer.dataset.id} of this benchmark was deleted: "
                "the plot cannot be drawn"
            ) from None
        width = info.fit_shape()[1]  # a table's categories one-hot encoded
        if width < 2:
            raise InvalidParameterError(
                f"the boundary plot needs at least 2 features; this dataset has {width}",
                errors=[{"loc": ["dataset"], "msg": f"{width} feature"}],
            )
        params = answer.params
        given = {s.init: s.centers for s in params.strategies}
        specs = [
            PanelSpec(
                init=r.init,
                n_init=r.n_init,
                start_centers=await self._panel_start(r.init, r.model_id, given.get(r.init)),
                estimator=params.estimator,
            )
            for r in answer.results
            if init is None or r.init == init
        ]
        X_path, _ = self.datasets.files(info)
        png = await self.pool.run(
            functools.partial(
                tasks.render_boundaries_from_file,
                n_clusters=answer.n_clusters,
                random_state=params.random_state,
                dataset_name=info.name,
                dataset_id=info.id,
                feature_names=info.feature_names,
                missing=params.missing,
            ),
            X_path,
            specs,
        )
        await to_thread.run_sync(self.results.put_plot, entry.id, init or "all", png)
        return png

    async def _panel_start(
        self, init: str, model_id: str, centers: list[list[float]] | None
    ) -> np.ndarray | None:
        """Where a panel's 2-D fit starts: the model's centres for ``pca`` (as before),
        the given centres for ``custom``, in the feature space; None for the others."""
        if init == "pca":
            return (await self.get_model(model_id)).centers_in_feature_space()
        if init == "custom" and centers is not None:
            return np.asarray(centers, dtype=np.float64)
        return None

    async def _compute(self, job: ResolvedBenchmark) -> tuple[StoredBenchmark, bool]:
        async def compute_and_store() -> StoredBenchmark:
            X_path, y_path = self.datasets.files(job.dataset)
            self.stats.computations += 1
            outcomes = await self._fit_strategies(job, X_path, y_path)
            entry = build_entry(job, outcomes)
            self._report(job.id, len(outcomes), len(outcomes), "storing")
            await to_thread.run_sync(self.results.put, entry)
            return entry

        stored = functools.partial(self.results.get, job.id)
        return await self._leased(job.id, f"benchmark {job.id}", stored, compute_and_store)

    async def _fit_strategies(
        self, job: ResolvedBenchmark, X_path: Path, y_path: Path | None
    ) -> list[bm.StrategyOutcome]:
        """One step per strategy (several may share a task: :meth:`run_steps`), in order,
        within one timeout for them all."""
        steps = [
            Step(
                strategy.init,
                tasks.run_strategy_from_files,
                (X_path, y_path, job.params, index),
                weight=job.params.n_clusters * strategy.n_init,
            )
            for index, strategy in enumerate(job.params.strategies)
        ]
        return await self.run_steps(
            job.dataset,
            steps,
            lambda outcome: outcome.fit_time,
            functools.partial(self._report, job.id),
            alike=pace_form(job.params),
        )

    async def get_model(self, model_id: str) -> bm.FittedModel:
        model = await to_thread.run_sync(self.results.get_model, model_id)
        if model is None:
            raise ModelNotFoundError(f"no model with id {model_id}")
        return model


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
        "versions": dict(bm.versions(job.params)),
    }
    return StoredBenchmark.from_answer(BenchmarkResult.model_validate(body), models)
