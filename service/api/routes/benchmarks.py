"""``/v1/benchmarks``: run, fetch and plot benchmarks."""

from __future__ import annotations

import contextlib
import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from service.api.answers import (
    add_report_route,
    answer_plot,
    answer_post,
    answer_responses,
    answer_stored,
    plot_responses,
    respond_answer,
)
from service.api.auth import Caller
from service.api.body import body_openapi
from service.api.create import Kind
from service.api.deps import (
    BenchmarkId,
    Engine,
    Tenants,
    decode_cursor,
    described_dataset,
    encode_cursor,
    problems,
    split_page,
)
from service.api.routes.jobs import JOB_ACCEPTED
from service.benchmark import ResolvedBenchmark, format_table
from service.datasets import DatasetInfo
from service.engine import BenchmarkEngine
from service.errors import BenchmarkNotFoundError, DatasetNotFoundError
from service.questions import BenchmarkQuestion
from service.report import render_report
from service.result_backend import ResultCache
from service.schemas import (
    BenchmarkList,
    BenchmarkRequest,
    BenchmarkResult,
    BenchmarkSummary,
    DatasetRef,
    StrategyName,
    iso_utc,
)
from service.store import StoredBenchmark
from service.tenants import BENCHMARK, Tenancy

router = APIRouter(prefix="/v1/benchmarks", tags=["benchmarks"])

MAX_PAGE = 100

EXAMPLES: dict[str, Any] = {
    "digits": {
        "summary": "scikit-learn's digits example",
        "description": "The seed's benchmark: digits, k-means++, random and PCA-based init.",
        "value": {},
    },
    "iris": {
        "summary": "iris, two strategies, own parameters",
        "value": {
            "dataset": "iris",
            "strategies": [{"init": "k-means++", "n_init": 10}, "random"],
            "random_state": 42,
            "algorithm": "elkan",
            "silhouette_sample_size": 100,
        },
    },
    "inline": {
        "summary": "inline data with labels",
        "value": {
            "X": [[0.0, 0.1], [0.2, 0.0], [0.1, 0.2], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]],
            "y": ["a", "a", "a", "b", "b", "b"],
            "strategies": ["k-means++", "pca"],
        },
    },
    "custom": {
        "summary": "your own starting centres",
        "description": "n_clusters rows of n_features values, in the data's own units.",
        "value": {
            "dataset": "iris",
            "strategies": [
                "k-means++",
                {
                    "init": "custom",
                    "centers": [[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.4, 1.4], [6.8, 3.1, 5.7, 2.1]],
                },
            ],
        },
    },
    "minibatch": {
        "summary": "MiniBatchKMeans",
        "value": {"dataset": "digits", "estimator": "minibatch"},
    },
    "bisecting": {
        "summary": "BisectingKMeans (k-means++ or random init only)",
        "value": {
            "dataset": "wine",
            "estimator": "bisecting",
            "strategies": ["k-means++", "random"],
        },
    },
    "unlabelled": {
        "summary": "inline data without labels",
        "value": {
            "X": [[1.0, 2.0], [1.1, 1.9], [8.0, 8.2], [7.9, 8.1], [0.9, 2.1]],
            "n_clusters": 2,
            "strategies": ["random"],
        },
    },
}

BENCHMARK_RESPONSE = answer_responses(
    "benchmark",
    "The benchmark's results (`X-Cache` says whether it was computed now).",
    {
        "schema": {"type": "string"},
        "example": "init\t\ttime\tinertia\thomo\tcompl\tv-meas\tARI\tAMI\tsilhouette\n",
    },
)


def _respond(
    answer_id: str,
    entry: StoredBenchmark,
    cached: bool,
    /,
    *,
    accept: str | None,
    extra: dict[str, str] | None = None,
) -> Response:
    def table() -> str:
        answer = entry.answer
        return format_table([r.model_dump() for r in answer.results], answer.params.estimator)

    return respond_answer(
        entry.id, entry.answered(cached), cached, accept=accept, table=table, extra=extra
    )


async def _claim(
    tenants: Tenancy, caller: str | None, entry: StoredBenchmark, engine: BenchmarkEngine
) -> None:
    """Give the caller the benchmark it was answered, with its models."""
    if caller is None:
        return
    answer = entry.answer
    # The estimator's width: a table's one-hot encoded columns, not its column count.
    n_features = answer.dataset.n_features
    with contextlib.suppress(DatasetNotFoundError):
        dataset = engine.datasets.get(answer.dataset.id)
        n_features = dataset.fit_shape(answer.params.missing)[1]
    k = answer.n_clusters
    # A model's arrays, in float64: the centres, the clusters' means and stds, the scaler's
    # mean and scale, the cluster sizes, and the upper half of the training distances.
    model_bytes = 8 * (3 * k * n_features + 2 * n_features + k + answer.dataset.n_samples // 2 + 1)
    await tenants.claim_benchmark(
        caller,
        entry.id,
        answer.dataset.id,
        len(entry.body),
        {r.model_id: model_bytes for r in answer.results},
    )


async def _held_entry(
    engine: BenchmarkEngine, tenants: Tenancy, caller: str | None, benchmark_id: str
) -> StoredBenchmark:
    """The stored benchmark, if the caller holds it or asked for the job that computed it;
    else 404, as if it did not exist."""
    entry = None
    if await tenants.holds(caller, BENCHMARK, benchmark_id):
        entry = await engine.cached(benchmark_id)
    elif await tenants.awaits_result(caller, benchmark_id):
        entry = await engine.cached(benchmark_id)
        if entry is not None:
            await _claim(tenants, caller, entry, engine)  # the job's result is the caller's now
    if entry is None:
        raise BenchmarkNotFoundError(f"no benchmark with id {benchmark_id}")
    return entry


class _BenchmarkKind(Kind[ResolvedBenchmark, BenchmarkQuestion, StoredBenchmark]):
    """A benchmark in the create sequence: answered from memory when its body's bytes
    were seen before; its answer holds its models."""

    async def hit(self, body: bytes | Path) -> tuple[str, StoredBenchmark] | None:
        # The same bytes asked again: answer from memory without parsing or hashing them.
        hot = self.engine.hot_hit(body) if isinstance(body, bytes) else None
        # A hit crosses tenants only to one that holds the data too: else the whole way.
        if (
            hot is not None
            and self.caller is not None
            and not await self.tenants.may_use_dataset(self.caller, hot.answer.dataset.id)
        ):
            hot = None
        return None if hot is None else (hot.id, hot)

    async def read(self, body: bytes | Path) -> ResolvedBenchmark:
        job = await self.engine.resolve_body(body, may_use=self.may_use)
        if isinstance(body, bytes):
            self.engine.remember(body, job)
        return job

    def dataset(self, read: ResolvedBenchmark) -> DatasetInfo:
        return read.dataset

    async def question(self, read: ResolvedBenchmark) -> BenchmarkQuestion:
        return BenchmarkQuestion(read)

    async def answer(self, question: BenchmarkQuestion) -> tuple[StoredBenchmark, bool]:
        return await self.engine.get_or_compute(question.resolved)

    async def claim(
        self, answer: StoredBenchmark, question: BenchmarkQuestion | None = None
    ) -> None:
        await _claim(self.tenants, self.caller, answer, self.engine)


@router.post(
    "",
    response_model=BenchmarkResult,
    responses={
        **BENCHMARK_RESPONSE,
        **JOB_ACCEPTED,
        **problems(400, 403, 406, 409, 413, 415, 422, 503, 504, 507),
    },
    openapi_extra=body_openapi(BenchmarkRequest, required=False, examples=EXAMPLES),
    summary="Run a benchmark, or fetch it from the cache",
)
async def create_benchmark(
    request: Request, engine: Engine, caller: Caller, tenants: Tenants
) -> Response:
    """Fit KMeans with each init strategy on the dataset and score the clusterings.

    With `Prefer: respond-async`, a result not stored yet is computed by a job: 202 with
    `Location: /v1/jobs/{id}`.
    """
    return await answer_post(request, _BenchmarkKind(engine, tenants, caller), _respond)


@router.get(
    "/{benchmark_id}",
    response_model=BenchmarkResult,
    responses={**BENCHMARK_RESPONSE, **problems(404, 406, 422)},
    summary="Get a stored benchmark",
)
async def get_benchmark(
    benchmark_id: BenchmarkId, request: Request, engine: Engine, caller: Caller, tenants: Tenants
) -> Response:
    """The same body as the request that made the benchmark, from the cache."""
    held = functools.partial(_held_entry, engine, tenants, caller, benchmark_id)
    return await answer_stored(request, benchmark_id, held, _respond)


@router.get(
    "/{benchmark_id}/plot.png",
    response_class=Response,
    responses=plot_responses("The decision-boundary plot: one panel per strategy."),
    summary="Get a benchmark's decision-boundary plot",
)
async def get_benchmark_plot(
    benchmark_id: BenchmarkId,
    request: Request,
    engine: Engine,
    caller: Caller,
    tenants: Tenants,
    init: Annotated[
        StrategyName | None,
        Query(description="Draw only this strategy's panel (one of the benchmark's)."),
    ] = None,
) -> Response:
    """The seed's figure: PCA-reduced data, KMeans regions, points and centroids."""
    held = functools.partial(_held_entry, engine, tenants, caller, benchmark_id)
    draw = functools.partial(_plot, engine, tenants, caller, init=init)
    return await answer_plot(request, benchmark_id, held, draw)


async def _plot(
    engine: BenchmarkEngine,
    tenants: Tenancy,
    caller: str | None,
    entry: StoredBenchmark,
    *,
    init: StrategyName | None,
) -> bytes:
    """The benchmark's plot (the ``init`` panel, or all), drawn once and kept; the
    caller's now."""
    png = await engine.get_or_render_plot(entry, init)
    await tenants.claim_plot(caller, entry.id, init or "all", len(png))
    return png


def _cursor(created: float, benchmark_id: str) -> str:
    return encode_cursor(f"benchmarks:{created!r}:{benchmark_id}")


def _before(text: str) -> tuple[float, str]:
    """The (created, id) a cursor's text from :func:`_cursor` names; ValueError for
    anything else."""
    prefix, created, benchmark_id = text.split(":")
    moment = float(created)
    if (
        prefix != "benchmarks"
        or not (moment >= 0 and moment < float("inf"))
        or len(benchmark_id) != 64
        or benchmark_id.strip("0123456789abcdef")
    ):
        raise ValueError(text)
    return moment, benchmark_id


def _summary(entry: StoredBenchmark, created: float) -> BenchmarkSummary:
    answer = entry.answer
    return BenchmarkSummary(
        id=entry.id,
        dataset=DatasetRef(id=answer.dataset.id, name=answer.dataset.name),
        n_clusters=answer.n_clusters,
        strategies=[r.init for r in answer.results],
        created_at=iso_utc(datetime.fromtimestamp(created, UTC)),
        plot_url=answer.plot_url,
        url=f"/v1/benchmarks/{entry.id}",
    )


@router.get(
    "",
    response_model=BenchmarkList,
    responses=problems(422),
    summary="List the stored benchmarks, newest first",
)
async def list_benchmarks(
    engine: Engine,
    caller: Caller,
    tenants: Tenants,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Benchmarks per page.")] = 20,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="`next_cursor` of the previous page."),
    ] = None,
) -> Response:
    """The caller's benchmarks (every stored one without keys), newest first, a page at a
    time; `next_cursor` leads to the next page."""
    before = None if cursor is None else decode_cursor(cursor, _before)
    among = None if caller is None else await tenants.held_benchmarks(caller)
    results: ResultCache = engine.results

    def read() -> tuple[list[BenchmarkSummary], str | None]:
        rows = results.page(limit=limit + 1, before=before, among=among)
        page, more = split_page(rows, limit)
        items = []
        for benchmark_id, created in page:
            entry = results.get(benchmark_id)
            if entry is not None:  # evicted or deleted since
                items.append(_summary(entry, created))
        return items, _cursor(*page[-1][::-1]) if more else None

    items, next_cursor = await to_thread.run_sync(read)
    body = BenchmarkList(benchmarks=items, next_cursor=next_cursor)
    return Response(body.model_dump_json(), media_type="application/json")


async def _shared_models(
    engine: BenchmarkEngine, tenants: Tenancy, caller: str, benchmark_id: str
) -> dict[str, str]:
    """The models of ``benchmark_id`` that another benchmark the caller holds uses too
    (benchmarks share equal models), each with one such benchmark."""
    if not await tenants.holds(caller, BENCHMARK, benchmark_id):
        return {}
    entry = await engine.cached(benchmark_id)
    if entry is None:
        return {}
    model_ids = [r.model_id for r in entry.answer.results]
    users = await to_thread.run_sync(engine.results.users_of, model_ids)
    held = set(await tenants.held_benchmarks(caller)) - {benchmark_id}
    return {model_id: min(others & held) for model_id, others in users.items() if others & held}


@router.delete(
    "/{benchmark_id}",
    status_code=204,
    responses=problems(404, 422, 503, 507),
    summary="Delete a benchmark with its models and plots",
)
async def delete_benchmark(
    benchmark_id: BenchmarkId, engine: Engine, caller: Caller, tenants: Tenants
) -> Response:
    """Remove the caller's hold on the benchmark, its models and its plots; the stored
    bytes go with the last holder (at once without keys)."""
    if caller is not None:
        keep = await _shared_models(engine, tenants, caller, benchmark_id)
        left = await tenants.release_benchmark(caller, benchmark_id, keep)
        if left is None:
            raise BenchmarkNotFoundError(f"no benchmark with id {benchmark_id}")
        if left == 0:
            await to_thread.run_sync(engine.results.delete, benchmark_id)
    elif not await to_thread.run_sync(engine.results.delete, benchmark_id):
        raise BenchmarkNotFoundError(f"no benchmark with id {benchmark_id}")
    return Response(status_code=204)


async def _report(
    engine: BenchmarkEngine, tenants: Tenancy, caller: str | None, benchmark_id: str
) -> str:
    """The seed's table, the decision-boundary plot (the same PNG as `plot.png`), the
    dataset, parameters and versions, as one HTML page with no external URL."""
    entry = await _held_entry(engine, tenants, caller, benchmark_id)
    answer = entry.answer
    png: bytes | None = None
    if answer.plot_url is not None:  # the plot needs two features
        png = await _plot(engine, tenants, caller, entry, init=None)
    profiles: dict[str, Any] = {
        r.init: (await engine.get_model(r.model_id)).profiles() for r in answer.results
    }
    described = await described_dataset(engine, tenants, caller, answer.dataset.id)
    return render_report(answer, png, described, profiles)


add_report_route(
    router,
    "benchmark",
    "benchmark",
    _report,
    page="One self-contained page: the table, the plot inline, the parameters and versions; "
    "it loads nothing from anywhere.",
    problem_codes=(404, 422, 503, 504),
)
