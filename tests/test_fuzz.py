"""Schema-driven fuzzing: nothing a client sends, valid or not, brings a 5xx error."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, positive_data_acceptance

from service.openapi import DEFAULT_PATH
from service.process import ServiceProcess

pytestmark = pytest.mark.server

# Every operation with valid requests; those that take input with invalid ones too.
CASES = [
    (method.upper(), path, mode)
    for path, item in json.loads(DEFAULT_PATH.read_text())["paths"].items()
    for method, operation in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or "parameters" in operation or "requestBody" in operation
]


@pytest.fixture(scope="module")
def fuzzed_server(make_server: Callable[..., ServiceProcess]) -> ServiceProcess:
    """A real server with small bounds, so that generated requests stay cheap."""
    return make_server(
        "fuzz",
        CLUSTERBENCH_TIMEOUT_S="5",
        CLUSTERBENCH_WORKERS="2",
        CLUSTERBENCH_QUEUE_SIZE="64",
        CLUSTERBENCH_MAX_BODY_BYTES=str(1 << 20),
        CLUSTERBENCH_MAX_CELLS="20000",
    )


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: ServiceProcess) -> schemathesis.BaseSchema:
    """The OpenAPI document the running server serves (not the committed copy)."""
    return schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")


# The service's own answers to more work than its bounds allow (the README's limits
# table): the only 5xx a client may get, each a problem of its documented type.
CAPACITY_PROBLEMS = {
    503: {"compute-busy", "compute-in-progress", "compute-failed", "worker-died"},
    504: {"compute-timeout"},
}


def only_capacity_problems(ctx: Any, response: Any, case: schemathesis.Case) -> None:
    """No 5xx but the documented capacity problems, with ``Retry-After`` on a 503.

    Under load (both cores busy) a generated request on the digits data can pass the
    fuzzing server's 5 s compute limit: that 504 is the contract, not a server error.
    """
    status = response.status_code
    if status < 500:
        return
    problem = json.loads(response.content) if response.content else {}
    slug = str(problem.get("type", "")).rsplit(":", 1)[-1]
    assert slug in CAPACITY_PROBLEMS.get(status, set()), (
        f"{case.operation.label} answered {status}: {response.content[:500]!r}"
    )
    assert response.headers.get("content-type", [""])[0].startswith("application/problem+json")
    if status == 503:
        assert response.headers.get("retry-after"), "a 503 without Retry-After"


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES]
)
def test_api_never_fails(
    api_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    # Check each operation with generated requests, valid and invalid: no 5xx, and
    # answers that conform to the documented statuses, media types and schemas.
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        # positive_data_acceptance is left out: a schema-valid request that the data
        # cannot satisfy (n_clusters > n_samples, an unknown dataset id) is a 4xx by design.
        # not_a_server_error gives way to only_capacity_problems, which is stricter about
        # the one kind of 5xx the contract has.
        case.call_and_validate(
            timeout=60,
            excluded_checks=[positive_data_acceptance, not_a_server_error],
            additional_checks=[only_capacity_problems],
        )

    run()
