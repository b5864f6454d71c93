"""The questions a job computes: a benchmark, a sweep over k, a stability run over seeds.

Each is a request resolved to its hash (the job's key, the result's id), with what a job
needs of it: its number of steps, the record a restarted server asks it again from, and
its computation, which a synchronous request for the same question shares (one step per
strategy; per (k, strategy); per strategy under every seed). :data:`KINDS`
says, per kind, where its result is read and how a stored record becomes the question
again. No HTTP here.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel

from service import benchmark as bm
from service import stability, sweeps, tasks
from service.benchmark import ResolvedBenchmark
from service.datasets import DatasetInfo
from service.engine import BenchmarkEngine, MayUse
from service.errors import DatasetNotFoundError, JobOrphanedError
from service.params import FitParams, pace_form
from service.runtime import Progress, Step, document_flight
from service.schemas import StabilityRequest, StabilityResult, SweepRequest, SweepResult
from service.schemas.common import answer_forms
from service.tables import check_missing

# A document question's parameters (a sweep's, a stability run's).
P = TypeVar("P")


class Question(Protocol):
    """A resolved request a job can compute."""

    kind: ClassVar[str]

    @property
    def id(self) -> str:
        """The request hash: the job's key and the result's id."""
        ...

    @property
    def dataset(self) -> DatasetInfo: ...

    @property
    def flight(self) -> str:
        """The name its computation runs under: in flight, in the lease across
        processes, and in the failures remembered."""
        ...

    @property
    def steps(self) -> int:
        """How many steps its progress counts."""
        ...

    def record(self) -> dict[str, Any]:
        """What a job stores to ask the question again (see :data:`KINDS`)."""
        ...

    async def stored(self, engine: BenchmarkEngine) -> bool:
        """Whether its result is stored already."""
        ...

    def computation(self, engine: BenchmarkEngine, progress: Progress) -> asyncio.Task[Any]:
        """The task computing and storing its result (the one in flight, or a new one),
        ``progress`` hearing each step; cancelling it stops the workers."""
        ...


@dataclass(frozen=True)
class BenchmarkQuestion:
    """A benchmark: one step per strategy."""

    kind: ClassVar[str] = "benchmark"
    resolved: ResolvedBenchmark

    @property
    def id(self) -> str:
        return self.resolved.id

    @property
    def dataset(self) -> DatasetInfo:
        return self.resolved.dataset

    @property
    def flight(self) -> str:
        return self.resolved.id

    @property
    def steps(self) -> int:
        return len(self.resolved.params.strategies)

    def record(self) -> dict[str, Any]:
        return {"dataset": self.dataset.id, "params": self.resolved.params.as_dict()}

    async def stored(self, engine: BenchmarkEngine) -> bool:
        return await engine.cached(self.id) is not None

    def computation(self, engine: BenchmarkEngine, progress: Progress) -> asyncio.Task[Any]:
        return engine.computation(self.resolved, progress)


@dataclass(frozen=True)
class _Document(Generic[P]):
    """A question whose answer is one stored JSON document (a sweep, a stability run):
    its id, its data and its parameters."""

    kind: ClassVar[str]
    id: str
    dataset: DatasetInfo
    params: P

    @property
    def flight(self) -> str:
        return document_flight(self.kind, self.id)

    async def stored(self, engine: BenchmarkEngine) -> bool:
        return await engine.cached_document(self.kind, self.id) is not None

    def computation(self, engine: BenchmarkEngine, progress: Progress) -> asyncio.Task[Any]:
        return engine.document_computation(
            self.kind, self.id, functools.partial(self.compute, engine), progress
        )

    async def get_or_compute(self, engine: BenchmarkEngine) -> tuple[bytes, bool]:
        """The answer's JSON bytes, and whether they came from the cache."""
        return await engine.get_or_compute_document(
            self.kind, self.id, functools.partial(self.compute, engine)
        )

    async def compute(self, engine: BenchmarkEngine, report: Progress) -> tuple[bytes, bytes]:
        """The answer's JSON as first answered and as stored (:func:`answer_forms`): its
        steps on the executor (:meth:`~service.runtime.Runtime.run_steps`), ``report``
        hearing them, then the answer assembled."""
        steps = self.plan(*engine.datasets.files(self.dataset))
        alike = pace_form(self.fit)
        results = await engine.run_steps(self.dataset, steps, self.seconds, report, alike=alike)
        report(len(steps), len(steps), "storing")
        return answer_forms(await self.answer(engine, results))

    def plan(self, X_path: Path, y_path: Path | None) -> list[Step[Any]]:
        """The steps, each a worker task on the stored data's files."""
        raise NotImplementedError

    @staticmethod
    def seconds(result: Any) -> float:
        """The fit seconds a step's result took (its pace, for the others' estimate)."""
        raise NotImplementedError

    async def answer(self, engine: BenchmarkEngine, results: list[Any]) -> BaseModel:
        """The answer's model, assembled from the steps' results."""
        raise NotImplementedError

    @property
    def fit(self) -> FitParams:
        """The settings its steps fit with."""
        raise NotImplementedError

    def body_parts(
        self, results: list[Any]
    ) -> tuple[str, dict[str, Any], P, list[Any], tuple[int, int]]:
        """What a kind's ``build_body`` takes: the id, the dataset's public summary, the
        parameters, the steps' ``results`` and the rows and columns the fit used (the
        data once its ``missing`` values are handled)."""
        missing = self.fit.missing
        summary = self.dataset.public(missing)
        return self.id, summary, self.params, results, self.dataset.fit_shape(missing)


@dataclass(frozen=True)
class SweepQuestion(_Document[sweeps.SweepParams]):
    """A sweep over k: one step per (k, strategy)."""

    kind: ClassVar[str] = "sweep"

    @property
    def steps(self) -> int:
        return len(sweeps.steps(self.params, *self.dataset.fit_shape(self.params.missing)))

    def record(self) -> dict[str, Any]:
        return {"dataset": self.dataset.id, "params": self.params.as_dict()}

    @property
    def fit(self) -> FitParams:
        return self.params

    def plan(self, X_path: Path, y_path: Path | None) -> list[Step[Any]]:
        strategies = self.params.strategies
        return [
            Step(
                f"k={k} {strategies[index].init}",
                tasks.run_step_from_files,
                (X_path, y_path, self.params, k, index),
                weight=k * strategies[index].n_init,
            )
            for k, index in sweeps.steps(self.params, *self.dataset.fit_shape(self.params.missing))
        ]

    @staticmethod
    def seconds(result: Any) -> float:
        return float(result["fit_time"])

    async def answer(self, engine: BenchmarkEngine, results: list[Any]) -> BaseModel:
        # The elbow's kneed loads scipy and matplotlib: assembled where the steps ran, not
        # in the API process (README "Performance").
        body = await engine.executor.submit(tasks.build_sweep_body, *self.body_parts(results))
        return SweepResult.model_validate(body)


@dataclass(frozen=True)
class StabilityQuestion(_Document[stability.StabilityParams]):
    """A benchmark under several seeds: one step per strategy (its seeds in one task)."""

    kind: ClassVar[str] = "stability"

    @property
    def steps(self) -> int:
        return len(self.params.benchmark.strategies)

    def record(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.id,
            "params": self.params.benchmark.as_dict(),
            "seeds": list(self.params.seeds),
        }

    @property
    def fit(self) -> FitParams:
        return self.params.benchmark

    def plan(self, X_path: Path, y_path: Path | None) -> list[Step[Any]]:
        benchmark, seeds = self.params.benchmark, len(self.params.seeds)
        return [
            Step(
                strategy.init,
                tasks.run_seeds_from_files,
                (X_path, y_path, self.params, i),
                weight=seeds * benchmark.n_clusters * strategy.n_init,
            )
            for i, strategy in enumerate(benchmark.strategies)
        ]

    @staticmethod
    def seconds(result: Any) -> float:
        return float(sum(row["fit_time"] for row in result["per_seed"]))

    async def answer(self, engine: BenchmarkEngine, results: list[Any]) -> BaseModel:
        body = stability.build_body(*self.body_parts(results))
        return StabilityResult.model_validate(body)


def resolve_sweep(request: SweepRequest, dataset: DatasetInfo) -> SweepQuestion:
    """A sweep request with its defaults applied, checked against the data."""
    params = sweeps.SweepParams(
        dataset=dataset.id,
        k=sweeps.k_values(request.k_list()),
        strategies=bm.strategies_of(request.strategies),
        **request.fit_params(),
    )
    check_missing(dataset.table_columns(), params.missing, dataset.n_samples)
    sweeps.check_sweep(params, *dataset.fit_shape(params.missing))
    return SweepQuestion(id=sweeps.sweep_id(params), dataset=dataset, params=params)


async def resolve_stability(
    engine: BenchmarkEngine,
    request: StabilityRequest,
    dataset: DatasetInfo,
    *,
    may_use: MayUse | None = None,
) -> StabilityQuestion:
    """A stability request with its defaults applied, checked against the data."""
    benchmark = await engine.resolve(request, dataset, may_use=may_use)
    params = stability.StabilityParams(benchmark.params, stability.seed_list(request.seeds))
    stability.check_labels(params, dataset.n_samples, engine.stability_max_labels)
    return StabilityQuestion(id=stability.stability_id(params), dataset=dataset, params=params)


# -- asked again after a restart ------------------------------------------------------


def _dataset(engine: BenchmarkEngine, record: dict[str, Any]) -> DatasetInfo:
    try:
        return engine.datasets.get(record["dataset"])
    except DatasetNotFoundError:
        raise DatasetNotFoundError(
            f"the server restarted while this job was queued or running, and its dataset "
            f"{record['dataset']} has been deleted since: it cannot run again"
        ) from None


def _same(key: str, question: Question) -> Question:
    """``question``, if it hashes to the job's key still."""
    if question.id != key:
        raise JobOrphanedError(
            "the server restarted with other versions of the service, scikit-learn or "
            "NumPy while this job was queued or running: its result would differ; ask again"
        )
    return question


def _benchmark_params(raw: dict[str, Any]) -> bm.BenchmarkParams:
    raw = dict(raw)
    raw["strategies"] = tuple(bm.Strategy(**s) for s in raw["strategies"])
    raw["left_out"] = tuple(raw.get("left_out", ()))
    return bm.BenchmarkParams(**raw)


def _benchmark(engine: BenchmarkEngine, key: str, record: dict[str, Any]) -> Question:
    dataset = _dataset(engine, record)
    params = _benchmark_params(record["params"])
    resolved = ResolvedBenchmark(id=bm.benchmark_id(params), dataset=dataset, params=params)
    return _same(key, BenchmarkQuestion(resolved))


def _sweep(engine: BenchmarkEngine, key: str, record: dict[str, Any]) -> Question:
    dataset = _dataset(engine, record)
    raw = dict(record["params"])
    raw["k"] = tuple(raw["k"])
    raw["strategies"] = tuple(bm.Strategy(**s) for s in raw["strategies"])
    params = sweeps.SweepParams(**raw)
    return _same(key, SweepQuestion(id=sweeps.sweep_id(params), dataset=dataset, params=params))


def _stability(engine: BenchmarkEngine, key: str, record: dict[str, Any]) -> Question:
    dataset = _dataset(engine, record)
    seeds = tuple(record["seeds"])
    params = stability.StabilityParams(_benchmark_params(record["params"]), seeds)
    question = StabilityQuestion(id=stability.stability_id(params), dataset=dataset, params=params)
    return _same(key, question)


@dataclass(frozen=True)
class Kind:
    """What a job of one kind leaves, and how its stored record is asked again.

    ``rebuild(engine, key, record)`` raises a ServiceError saying why the question
    cannot run again (its dataset deleted, other versions since).
    """

    result_path: str
    rebuild: Callable[[BenchmarkEngine, str, dict[str, Any]], Question]

    def result_url(self, key: str) -> str:
        return f"{self.result_path}/{key}"


KINDS: dict[str, Kind] = {
    BenchmarkQuestion.kind: Kind("/v1/benchmarks", _benchmark),
    SweepQuestion.kind: Kind("/v1/sweeps", _sweep),
    StabilityQuestion.kind: Kind("/v1/stability", _stability),
}
