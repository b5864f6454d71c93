"""``/v1/stability``: a benchmark under several seeds, and how much its answer moves."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from service import stability
from service.api.answers import IMMUTABLE, REPRESENTATIONS, held_document, respond_document
from service.api.auth import Caller
from service.api.body import body_openapi
from service.api.create import Stability, create, not_modified
from service.api.deps import (
    BenchmarkId,
    Engine,
    Tenants,
    described_dataset,
    etag_matches,
    html_page,
    html_response,
    negotiate,
    problems,
)
from service.api.routes.jobs import JOB_ACCEPTED
from service.engine import BenchmarkEngine
from service.errors import StabilityNotFoundError
from service.questions import StabilityQuestion
from service.report import render_stability_report
from service.schemas import StabilityRequest, StabilityResult
from service.tenants import Tenancy

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

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Each strategy over the seeds (`X-Cache` says whether it was computed now).",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    304: {"description": "`If-None-Match` names this run: the client has it."},
}


_respond = functools.partial(respond_document, table=stability.format_table)


def _missing(result_id: str) -> StabilityNotFoundError:
    return StabilityNotFoundError(f"no stability run with id {result_id}")


async def _held(
    engine: BenchmarkEngine, tenants: Tenancy, caller: str | None, result_id: str
) -> bytes:
    return await held_document(engine, tenants, caller, KIND, result_id, _missing)


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
    accept = request.headers.get("accept")
    negotiate(accept, REPRESENTATIONS)
    return await create(
        request,
        Stability(engine, tenants, caller),
        functools.partial(_respond, accept=accept),
    )


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
    accept = request.headers.get("accept")
    negotiate(accept, REPRESENTATIONS)
    body = await _held(engine, tenants, caller, stability_id)
    if etag_matches(request.headers.get("if-none-match"), f'"{stability_id}"'):
        return not_modified(stability_id)
    return _respond(stability_id, body, True, accept=accept, extra={"Cache-Control": IMMUTABLE})


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
    data = orjson.loads(await _held(engine, tenants, caller, stability_id))
    described = await described_dataset(engine, tenants, caller, data["dataset"]["id"])
    return html_page(render_stability_report(data, described))
