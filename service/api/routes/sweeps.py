"""``/v1/sweeps``: choose k — the benchmark's scores for each k, and the recommended k."""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from service import sweeps, tasks
from service.api.answers import (
    DocumentKind,
    add_document_routes,
    add_report_route,
    answer_plot,
    plot_responses,
)
from service.api.auth import Caller
from service.api.create import Sweep
from service.api.deps import (
    BenchmarkId,
    Engine,
    Tenants,
    described_dataset,
)
from service.engine import BenchmarkEngine
from service.errors import SweepNotFoundError
from service.questions import SweepQuestion
from service.report import render_sweep_report
from service.runtime import Progress
from service.schemas import SweepResult
from service.tenants import SWEEP, Tenancy

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])

KIND = SweepQuestion.kind
PLOT_KIND = "sweep-plot"

EXAMPLES: dict[str, Any] = {
    "digits": {
        "summary": "digits, k = 2..10, k-means++",
        "description": "The default sweep: which k does each criterion pick on digits?",
        "value": {},
    },
    "iris": {
        "summary": "iris, k from 2 to 6, two strategies",
        "value": {"dataset": "iris", "k": {"min": 2, "max": 6}, "strategies": ["k-means++", "pca"]},
    },
    "inline": {
        "summary": "inline data without labels, a list of k",
        "value": {
            "X": [[0.0, 0.1], [0.2, 0.0], [0.1, 0.2], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]],
            "k": [2, 3, 4],
            "estimator": "minibatch",
        },
    },
}


DOCUMENTS = DocumentKind(
    KIND,
    SweepResult,
    sweeps.format_table,
    lambda answer_id: SweepNotFoundError(f"no sweep with id {answer_id}"),
)

add_document_routes(
    router,
    DOCUMENTS,
    Sweep,
    name="sweep",
    noun="sweep",
    answered="The sweep (`X-Cache` says whether it was computed now); as `text/plain`, a "
    "table of k x strategy x scores and each strategy's recommended k.",
    examples=EXAMPLES,
    create_summary="Choose k: run a sweep over k, or fetch it from the cache",
    create_description="Fit and score each strategy at each k, and recommend a k by each "
    "criterion.",
    get_summary="Get a stored sweep",
)


@router.get(
    "/{sweep_id}/plot.png",
    response_class=Response,
    responses=plot_responses(
        "Inertia, silhouette, Davies-Bouldin and Calinski-Harabasz against k, one line "
        "per strategy, the recommended k marked."
    ),
    summary="Get a sweep's scores plotted against k",
)
async def get_sweep_plot(
    sweep_id: BenchmarkId, request: Request, engine: Engine, caller: Caller, tenants: Tenants
) -> Response:
    """The scores against k, the k each criterion recommends marked."""
    held = functools.partial(DOCUMENTS.held, engine, tenants, caller, sweep_id)
    draw = functools.partial(_plot, engine, tenants, caller, sweep_id)
    return await answer_plot(request, sweep_id, held, draw)


async def _plot(
    engine: BenchmarkEngine, tenants: Tenancy, caller: str | None, sweep_id: str, stored: bytes
) -> bytes:
    """The sweep's plot, drawn once (from its ``stored`` answer, in a worker) and kept;
    the caller's now."""

    async def render(_: Progress) -> tuple[bytes, bytes]:  # one step: nobody follows it
        png: bytes = await engine.pool.run(tasks.render_sweep, stored)
        return png, png

    png, _ = await engine.get_or_compute_document(PLOT_KIND, sweep_id, render)
    await tenants.claim_result_plot(caller, SWEEP, sweep_id, len(png))
    return png


async def _report(
    engine: BenchmarkEngine, tenants: Tenancy, caller: str | None, sweep_id: str
) -> str:
    """The recommended k, the scores against k (the same PNG as `plot.png`), the table,
    the dataset, parameters and versions, as one HTML page with no external URL."""
    stored = await DOCUMENTS.held(engine, tenants, caller, sweep_id)
    png = await _plot(engine, tenants, caller, sweep_id, stored)
    answer = SweepResult.model_validate_json(stored)
    described = await described_dataset(engine, tenants, caller, answer.dataset.id)
    return render_sweep_report(answer, png, described)


add_report_route(
    router,
    "sweep",
    "sweep",
    _report,
    page="One self-contained page: each strategy's recommended k, the plot inline, the "
    "scores, the parameters and versions; it loads nothing.",
    problem_codes=(404, 422, 503, 504),
)
