"""The FastAPI application: ``create_app(settings)`` and the module-level ``app``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypedDict

from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry, disable_created_metrics

from service import __version__
from service.api import auth, problems
from service.api.body import BodyBudget
from service.api.deps import problems as problem_responses
from service.api.docs import customise_openapi, install_docs
from service.api.middleware import (
    BodySizeLimitMiddleware,
    HeadMiddleware,
    MetricsMiddleware,
    StoppingMiddleware,
)
from service.api.routes import benchmarks, datasets, health, jobs, models, stability, sweeps
from service.compute import ComputePool, GateBounds
from service.datasets import DatasetStore
from service.engine import BenchmarkEngine
from service.errors import StorageError
from service.executors import DaskExecutor
from service.formats import DataLimits
from service.jobs.manager import JobManager
from service.jobs.records import JobBackend, JobStore
from service.jobs.redis_records import RedisJobStore
from service.redis_store import RedisResultStore
from service.result_backend import ResultBackend
from service.settings import Settings
from service.space import SpaceWatch
from service.store import ResultStore
from service.tenants import Tenancy, TenantStore, parse_keys

logger = logging.getLogger("service")

DESCRIPTION = """
scikit-learn's [K-Means on the handwritten digits](https://scikit-learn.org/stable/auto_examples/cluster/plot_kmeans_digits.html)
benchmark as a service: send a dataset (or use a built-in one), name the KMeans init
strategies to compare, and get fit time, inertia, homogeneity, completeness, V-measure,
ARI, AMI and silhouette per strategy. Results are cached by a hash of the request.

Errors are `application/problem+json` (RFC 9457).

When the service has API keys, every `/v1` request needs one: `Authorization: Bearer <key>`
or `X-API-Key: <key>` (the **Authorize** button). Each key's tenant sees only its own data
and results. With no key configured the service is open, for a single user.
"""


class State(TypedDict):
    engine: BenchmarkEngine
    jobs: JobManager
    registry: CollectorRegistry
    body_budget: BodyBudget
    tenancy: Tenancy
    space: SpaceWatch


def _operation_id(route: APIRoute) -> str:
    return route.name


def result_store(settings: Settings) -> ResultBackend:
    """Where results live: Redis when CLUSTERBENCH_REDIS_URL is set, else SQLite."""
    if settings.redis_url:
        return RedisResultStore(
            settings.redis_url,
            max_bytes=settings.cache_max_bytes,
            memory_bytes=settings.memory_cache_bytes,
            timeout_s=settings.redis_timeout_s,
        )
    return ResultStore(
        settings.data_dir / "cache.sqlite3",
        max_bytes=settings.cache_max_bytes,
        memory_bytes=settings.memory_cache_bytes,
    )


def job_records(settings: Settings) -> JobBackend:
    """Where job records live: Redis when CLUSTERBENCH_REDIS_URL is set, else SQLite."""
    if settings.redis_url:
        return RedisJobStore(settings.redis_url, timeout_s=settings.redis_timeout_s)
    return JobStore(settings.data_dir / "jobs.sqlite3")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; tests pass their own ``settings``."""
    settings = settings or Settings()
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    env_keys = parse_keys(settings.api_keys.get_secret_value()) if settings.api_keys else {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # The compute lane's bounds, whether its workers are local processes or Dask's.
        lane: GateBounds = {
            "queue_size": settings.queue_size,
            "timeout_s": settings.timeout_s,
            "threads_per_worker": settings.threads_per_worker,
            "tenant_share": settings.tenant_pool_share,
        }
        pool = ComputePool(workers=settings.workers, **lane)
        data_pool = ComputePool(
            workers=settings.data_workers,
            queue_size=settings.data_queue_size,
            timeout_s=settings.timeout_s,
            threads_per_worker=1,
            name="data",
            tenant_share=settings.tenant_pool_share,
            warm=False,
        )
        executor: DaskExecutor | None = None
        if settings.dask_scheduler is not None:
            executor = DaskExecutor(
                settings.dask_scheduler, connect_timeout_s=settings.dask_connect_timeout_s, **lane
            )
        engine = BenchmarkEngine(
            datasets=DatasetStore(settings.data_dir / "datasets"),
            limits=DataLimits.from_settings(settings),
            results=result_store(settings),
            pool=pool,
            data_pool=data_pool,
            failure_ttl_s=settings.failure_ttl_s,
            predict_max_distances=settings.predict_max_distances,
            stability_max_labels=settings.stability_max_labels,
            executor=executor,
        )
        await asyncio.to_thread(engine.clean_scratch)
        tenancy = Tenancy(
            await asyncio.to_thread(TenantStore, settings.data_dir / "tenants.sqlite3", env_keys),
            engine.datasets,
            quota_bytes=settings.tenant_quota_bytes,
            dataset_ttl_s=settings.dataset_ttl_s,
            inline_max_bytes=settings.inline_max_bytes,
            builtin=engine.builtin,
        )
        try:
            await asyncio.to_thread(tenancy.store.record_environment)
            keys_required = await tenancy.keys_required()
        except StorageError as exc:
            # Whether keys exist is unknown: /v1 answers 503 until the store opens.
            logger.error("the keys cannot be read yet: %s", exc.detail)
        else:
            if keys_required:
                logger.info("API keys configured: every /v1 request needs one")
            else:
                logger.warning(
                    "no API key configured: the service is open to anyone who can reach it "
                    "(single-user mode; see 'python -m service keys create NAME')"
                )
        sweeper = asyncio.create_task(tenancy.sweep_forever())
        await asyncio.gather(
            pool.start(), data_pool.start(), *([executor.start()] if executor else [])
        )
        collector = health.EngineCollector(engine)
        registry.register(collector)
        job_store = await asyncio.to_thread(job_records, settings)
        job_manager = JobManager(
            job_store,
            engine,
            max_active=settings.max_jobs,
            tenant_max_active=settings.tenant_max_jobs,
            retention_s=settings.job_retention_s,
            on_pruned=tenancy.forget_jobs,
        )
        # Jobs left queued or running by a process that is gone: run again, or failed.
        await job_manager.start()
        job_collector = jobs.JobCollector(job_manager)
        registry.register(job_collector)
        logger.info("clusterbench %s ready, data in %s", __version__, settings.data_dir)
        try:
            yield {
                "engine": engine,
                "jobs": job_manager,
                "registry": registry,
                "body_budget": BodyBudget(settings.body_memory_bytes),
                "tenancy": tenancy,
                "space": SpaceWatch(),
            }
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await job_manager.close()
            registry.unregister(job_collector)
            registry.unregister(collector)
            pool.close()
            data_pool.close()
            if executor is not None:
                await executor.close()
            engine.results.close()
            tenancy.store.close()

    app = FastAPI(
        title="clusterbench",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        docs_url=None,  # install_docs serves both pages without a CDN
        redoc_url=None,
        openapi_tags=[
            {"name": "benchmarks", "description": "Run and fetch K-Means benchmarks."},
            {"name": "datasets", "description": "Upload data once, refer to it by id."},
            {"name": "models", "description": "The fitted models of benchmarks."},
            {"name": "jobs", "description": "Long computations: progress, events, cancel."},
            {"name": "sweeps", "description": "Choose k: scores against k, a k recommended."},
            {"name": "stability", "description": "How much a benchmark depends on its seed."},
            {"name": "operations", "description": "Health, readiness and metrics."},
        ],
    )
    app.state.settings = settings
    problems.install(app)
    # Every /v1 route: the caller's key when keys are configured, and its rate limit.
    for router in (
        benchmarks.router,
        datasets.router,
        models.router,
        jobs.router,
        sweeps.router,
        stability.router,
    ):
        app.include_router(
            router,
            dependencies=[Depends(auth.get_tenant)],
            responses=problem_responses(401, 429),
        )
    app.include_router(health.router)
    install_docs(app)
    # Innermost: its 503 for a request the stop cut off is counted and HEAD-stripped too.
    app.add_middleware(StoppingMiddleware, grace_s=settings.shutdown_grace_s)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(HeadMiddleware)
    app.add_middleware(MetricsMiddleware, registry=registry)
    customise_openapi(app)
    auth.install(app, settings, registry)
    documented = app.openapi
    app.openapi = lambda: auth.optional_security(documented())  # type: ignore[method-assign]
    return app


def __getattr__(name: str) -> Any:
    # `uvicorn service.main:app` builds the app from the environment when it is first
    # asked for, so importing this module (tests, tools) does not read the environment.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
