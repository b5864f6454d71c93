"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.responses import Response

from service.api.deps import Engine, problems
from service.api.problems import problem_response
from service.engine import BenchmarkEngine
from service.schemas import Health
from service.space import SpaceWatch

router = APIRouter(tags=["operations"])

RETRY_SOON = {"Retry-After": "5"}
# The longest /readyz waits for the store's answer (its probe waits 1 s for a lock).
READY_CHECK_S = 3.0
OK = Health(status="ok").model_dump_json()


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Response:
    """200 while the process runs."""
    return Response(OK, media_type="application/json")


@router.get("/readyz", response_model=Health, responses=problems(503), summary="Readiness")
async def readyz(request: Request, engine: Engine) -> Response:
    """200 when the cache store, the data directory's disk and the compute pool are
    usable, else 503."""
    space: SpaceWatch = request.state.space
    # In a thread, and bounded: a database another process holds locked would otherwise
    # stall every request on the event loop for the store's 30 s busy timeout.
    try:
        problem = await asyncio.wait_for(
            asyncio.to_thread(lambda: engine.results.storage_problem() or space.problem()),
            READY_CHECK_S,
        )
    except TimeoutError:
        problem = f"the cache store did not answer within {READY_CHECK_S:g} s"
    if problem is not None:
        return problem_response(503, problem, headers=RETRY_SOON)
    if not engine.pool.healthy:
        return problem_response(503, "the compute pool is not running", headers=RETRY_SOON)
    if not engine.executor.healthy:
        problem = getattr(engine.executor, "problem", None) or "the executor is not running"
        return problem_response(503, problem, headers=RETRY_SOON)
    return Response(OK, media_type="application/json")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Request counts and latencies, cache hits and misses, computations, pool load."""
    registry: CollectorRegistry = request.state.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class EngineCollector(Collector):
    """Reads the engine's counters when scraped, so the hot path only bumps integers."""

    def __init__(self, engine: BenchmarkEngine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.engine.stats
        yield CounterMetricFamily(
            "clusterbench_benchmark_cache_hits",
            "Benchmarks answered from the cache.",
            value=stats.hits,
        )
        yield CounterMetricFamily(
            "clusterbench_benchmark_cache_misses",
            "Benchmarks that had to be computed.",
            value=stats.misses,
        )
        yield CounterMetricFamily(
            "clusterbench_computations",
            "Benchmark computations run in the pool.",
            value=stats.computations,
        )
        yield GaugeMetricFamily(
            "clusterbench_compute_pending",
            "Computations running or waiting for a worker.",
            value=self.engine.pool.pending,
        )
        yield GaugeMetricFamily(
            "clusterbench_data_pending",
            "Data-lane tasks (uploads, large bodies, predictions) running or waiting.",
            value=self.engine.data_pool.pending,
        )
        deaths = CounterMetricFamily(
            "clusterbench_worker_deaths",
            "Worker processes that died while running a task (killed, out of memory).",
            labels=["lane"],
        )
        for pool in (self.engine.pool, self.engine.data_pool):
            deaths.add_metric([pool.name], pool.worker_deaths)
        yield deaths
