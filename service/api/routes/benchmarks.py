"""``/v1/benchmarks``: run, fetch and plot benchmarks."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from service.api.auth import Caller
from service.api.body import body_openapi, json_body
from service.api.deps import (
    BenchmarkId,
    Engine,
    Tenants,
    etag_matches,
    negotiate,
    problems,
)
from service.api.routes.jobs import JOB_ACCEPTED, prefers_async, respond_async
from service.benchmark import format_table
from service.engine import BenchmarkEngine
from service.errors import BenchmarkNotFoundError
from service.schemas import BenchmarkRequest, BenchmarkResult, StrategyName
from service.store import StoredBenchmark
from service.tenants import BENCHMARK, Tenancy

router = APIRouter(prefix="/v1/benchmarks", tags=["benchmarks"])

REPRESENTATIONS = ("application/json", "text/plain")
# A benchmark's id names its content for good: caches may keep it.
IMMUTABLE = "public, max-age=31536000, immutable"

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

BENCHMARK_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The benchmark's results (`X-Cache` says whether it was computed now).",
        "content": {
            "text/plain": {
                "schema": {"type": "string"},
                "example": "init\t\ttime\tinertia\thomo\tcompl\tv-meas\tARI\tAMI\tsilhouette\n",
            }
        },
    },
    304: {"description": "`If-None-Match` names this benchmark: the client has it."},
}


def _respond(
    entry: StoredBenchmark, *, cached: bool, accept: str | None, extra: dict[str, str] | None = None
) -> Response:
    media_type = negotiate(accept, REPRESENTATIONS)
    headers = {
        "ETag": f'"{entry.id}"',
        "X-Cache": "hit" if cached else "miss",
        "Vary": "Accept",
        **(extra or {}),
    }
    if media_type == "text/plain":
        data = entry.data
        table = format_table(data["results"], data["params"].get("estimator", "kmeans"))
        return Response(table, headers=headers, media_type=media_type)
    return Response(
        entry.hit_body if cached else entry.body, headers=headers, media_type=media_type
    )


async def _claim(tenants: Tenancy, caller: str | None, entry: StoredBenchmark) -> None:
    """Give the caller the benchmark it was answered, with its models."""
    if caller is None:
        return
    data = entry.data
    n_features = data["dataset"]["n_features"]
    # A model's arrays: the centres and the scaler's mean and scale, in float64.
    model_bytes = 8 * (data["n_clusters"] * n_features + 2 * n_features)
    await tenants.claim_benchmark(
        caller,
        entry.id,
        data["dataset"]["id"],
        len(entry.body),
        {r["model_id"]: model_bytes for r in data["results"]},
    )


async def _held_entry(
    engine: BenchmarkEngine, tenants: Tenancy, caller: str | None, benchmark_id: str
) -> StoredBenchmark:
    """The stored benchmark, if the caller holds it or asked for the job that computed it;
    else 404, as if it did not exist."""
    entry = None
    if await tenants.holds(caller, BENCHMARK, benchmark_id):
        entry = await engine.cached(benchmark_id)
    elif await tenants.awaits_benchmark(caller, benchmark_id):
        entry = await engine.cached(benchmark_id)
        if entry is not None:
            await _claim(tenants, caller, entry)  # the job's result is the caller's now
    if entry is None:
        raise BenchmarkNotFoundError(f"no benchmark with id {benchmark_id}")
    return entry


def _not_modified(benchmark_id: str) -> Response:
    return Response(status_code=304, headers={"ETag": f'"{benchmark_id}"', "Vary": "Accept"})


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
    accept = request.headers.get("accept")
    negotiate(accept, REPRESENTATIONS)
    if_none_match = request.headers.get("if-none-match")
    async with json_body(request, engine) as body:
        # The same bytes asked again: answer from memory without parsing or hashing them.
        hot = engine.hot_hit(body) if isinstance(body, bytes) else None
        # A hit crosses tenants only to one that holds the data too: else the whole way.
        if (
            hot is not None
            and caller is not None
            and not await tenants.may_use_dataset(caller, hot.data["dataset"]["id"])
        ):
            hot = None
        if hot is not None:
            if etag_matches(if_none_match, f'"{hot.id}"'):
                return _not_modified(hot.id)
            await _claim(tenants, caller, hot)
            return _respond(hot, cached=True, accept=accept)
        may_use = None if caller is None else functools.partial(tenants.may_use_dataset, caller)
        job = await engine.resolve_body(body, may_use=may_use)
        if isinstance(body, bytes):
            engine.remember(body, job)
    # The data sent inline is the caller's now (within its quota); named data it held.
    await tenants.claim_dataset(caller, job.dataset.id)
    if etag_matches(if_none_match, f'"{job.id}"'):
        return _not_modified(job.id)
    if caller is not None and not await tenants.holds(caller, BENCHMARK, job.id):
        await tenants.check_quota(caller)
    if prefers_async(request):
        accepted = await respond_async(request, job, caller, tenants)
        if accepted is not None:
            return accepted
    entry, cached = await engine.get_or_compute(job)
    await _claim(tenants, caller, entry)
    return _respond(entry, cached=cached, accept=accept)


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
    accept = request.headers.get("accept")
    negotiate(accept, REPRESENTATIONS)
    entry = await _held_entry(engine, tenants, caller, benchmark_id)
    if etag_matches(request.headers.get("if-none-match"), f'"{benchmark_id}"'):
        return _not_modified(benchmark_id)
    return _respond(
        entry,
        cached=True,
        accept=accept,
        extra={"Cache-Control": IMMUTABLE},
    )


@router.get(
    "/{benchmark_id}/plot.png",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The decision-boundary plot: one panel per strategy.",
        },
        304: {"description": "`If-None-Match` names this plot: the client has it."},
        **problems(404, 422, 503, 504),
    },
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
    entry = await _held_entry(engine, tenants, caller, benchmark_id)
    headers = {"ETag": f'"{benchmark_id}"', "Cache-Control": IMMUTABLE}
    if etag_matches(request.headers.get("if-none-match"), f'"{benchmark_id}"'):
        return Response(status_code=304, headers=headers)
    png = await engine.get_or_render_plot(entry, init)
    await tenants.claim_plot(caller, benchmark_id, init or "all", len(png))
    return Response(png, headers=headers, media_type="image/png")
