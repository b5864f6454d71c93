"""Schema-driven fuzzing: nothing a client sends, valid or not, brings a 5xx error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

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
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A real server with small bounds, so that generated requests stay cheap."""
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    data_dir.mkdir()
    server = ServiceProcess(
        data_dir,
        CLUSTERBENCH_TIMEOUT_S="5",
        CLUSTERBENCH_WORKERS="2",
        CLUSTERBENCH_QUEUE_SIZE="64",
        CLUSTERBENCH_MAX_BODY_BYTES=str(1 << 20),
        CLUSTERBENCH_MAX_CELLS="20000",
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: ServiceProcess) -> schemathesis.BaseSchema:
    """The OpenAPI document the running server serves (not the committed copy)."""
    return schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")


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
        case.call_and_validate(timeout=60, excluded_checks=[positive_data_acceptance])

    run()
