"""``/v1/stability``: a benchmark under several seeds, and how much its answer moves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service import stability
from service.api.answers import DocumentKind, add_document_routes, add_report_route
from service.api.create import Stability
from service.api.deps import (
    described_dataset,
)
from service.engine import BenchmarkEngine
from service.errors import StabilityNotFoundError
from service.questions import StabilityQuestion
from service.report import render_stability_report
from service.schemas import StabilityResult
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

DOCUMENTS = DocumentKind(
    KIND,
    StabilityResult,
    stability.format_table,
    lambda answer_id: StabilityNotFoundError(f"no stability run with id {answer_id}"),
)

add_document_routes(
    router,
    DOCUMENTS,
    Stability,
    name="stability",
    noun="run",
    answered="Each strategy over the seeds (`X-Cache` says whether it was computed now).",
    examples=EXAMPLES,
    create_summary="Run a benchmark under several seeds, or fetch it from the cache",
    create_description="Mean and standard deviation of every number over the seeds, and "
    "their agreement.",
    get_summary="Get a stored stability run",
)


async def _report(
    engine: BenchmarkEngine, tenants: Tenancy, caller: str | None, stability_id: str
) -> str:
    """The table of means ± standard deviations and the seeds' agreement, the dataset,
    parameters and versions, as one HTML page with no external URL."""
    answer = await DOCUMENTS.answer(engine, tenants, caller, stability_id)
    described = await described_dataset(engine, tenants, caller, answer.dataset.id)
    return render_stability_report(answer, described)


add_report_route(
    router,
    "stability",
    "stability run",
    _report,
    page="One self-contained page: each strategy's numbers over the seeds, the parameters "
    "and versions; it loads nothing.",
    problem_codes=(404, 422),
)
