"""``/v1/stability``: a benchmark under several seeds, and how much its answer moves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from service import stability
from service.api.answers import DocumentKind, answer_post, answer_responses
from service.api.auth import Caller
from service.api.body import body_openapi
from service.api.create import Stability
from service.api.deps import (
    BenchmarkId,
    Engine,
    Tenants,
    described_dataset,
    html_page,
    html_response,
    problems,
)
from service.api.routes.jobs import JOB_ACCEPTED
from service.errors import StabilityNotFoundError
from service.questions import StabilityQuestion
from service.report import render_stability_report
from service.schemas import StabilityRequest, StabilityResult

router = APIRouter(prefix="/v1/stability", tags=["stability"])

KIND = StabilityQuestion.kind

EXAMPLES: dict[str, Any] = {
    "digits": {
        "summary": "the seed's benchmark under 10 seeds",
        "value": {"seeds": 10},
    },
    "iris": {
        "summary": "iris, named seeds, MiniBatchKMeans",
        "value": {
            "dataset": "iris",
            "seeds": [0, 1, 2, 42],
            "strategies": ["k-means++", "random"],
            "estimator": "minibatch",
        },
    },
}

RESPONSES = answer_responses(
    "run",
    "Each strategy over the seeds (`X-Cache` says whether it was computed now).",
    {"schema": {"type": "string"}},
)


DOCUMENTS = DocumentKind(
    KIND,
    StabilityResult,
    stability.format_table,
    lambda answer_id: StabilityNotFoundError(f"no stability run with id {answer_id}"),
)


@router.post(
    "",
    response_model=StabilityResult,
    responses={**RESPONSES, **JOB_ACCEPTED, **problems(400, 403, 406, 413, 415, 422, 503, 504)},
    openapi_extra=body_openapi(StabilityRequest, required=False, examples=EXAMPLES),
    summary="Run a benchmark under several seeds, or fetch it from the cache",
)
async def create_stability(
    request: Request, engine: Engine, caller: Caller, tenants: Tenants
) -> Response:
    """Mean and standard deviation of every number over the seeds, and their agreement.

    With `Prefer: respond-async`, a result not stored yet is computed by a job: 202 with
    `Location: /v1/jobs/{id}`.
    """
    return await answer_post(request, Stability(engine, tenants, caller), DOCUMENTS.respond)


@router.get(
    "/{stability_id}",
    response_model=StabilityResult,
    responses={**RESPONSES, **problems(404, 406, 422)},
    summary="Get a stored stability run",
)
async def get_stability(
    stability_id: BenchmarkId, request: Request, engine: Engine, caller: Caller, tenants: Tenants
) -> Response:
    """The same body as the request that made the run, from the cache."""
    return await DOCUMENTS.get(request, stability_id, engine, tenants, caller)


@router.get(
    "/{stability_id}/report",
    response_class=Response,
    responses={
        **html_response(
            "One self-contained page: each strategy's numbers over the "
            "seeds, the parameters and versions; it loads nothing."
        ),
        **problems(404, 422),
    },
    summary="Get a stability run as a self-contained HTML report",
)
async def get_stability_report(
    stability_id: BenchmarkId, engine: Engine, caller: Caller, tenants: Tenants
) -> Response:
    """The table of means ± standard deviations and the seeds' agreement, the dataset,
    parameters and versions, as one HTML page with no external URL."""
    answer = await DOCUMENTS.answer(engine, tenants, caller, stability_id)
    described = await described_dataset(engine, tenants, caller, answer.dataset.id)
    return html_page(render_stability_report(answer, described))
