"""The committed OpenAPI document is the one the app serves."""

from __future__ import annotations

import json

from service.main import create_app
from service.openapi import DEFAULT_PATH, main, render


def test_committed_document_is_current() -> None:
    # Check that openapi/openapi.json equals the app's document (run `make openapi` if not).
    assert DEFAULT_PATH.read_text() == render(create_app()), "run 'make openapi'"
    assert main(["--check"]) == 0


def test_document_is_deterministic() -> None:
    # Check that two apps render byte-identical documents.
    assert render(create_app()) == render(create_app())


def test_operations_are_named_and_tagged() -> None:
    # Check that every operation has a unique snake_case id, a tag and a summary, and that
    # error responses are documented as problem+json.
    spec = json.loads(DEFAULT_PATH.read_text())
    ids = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            ids.append(operation["operationId"])
            assert operation["operationId"].replace("_", "").isalnum(), (method, path)
            assert operation["tags"], (method, path)
            assert operation["summary"], (method, path)
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    assert list(response["content"]) == ["application/problem+json"], (
                        method,
                        path,
                        status,
                    )
    assert len(ids) == len(set(ids))


def test_each_problem_status_has_its_own_example() -> None:
    # Check that every documented problem response shows an example of its own status
    # (Swagger showed the 422 example under 400, 406, 413 and 415).
    spec = json.loads(DEFAULT_PATH.read_text())
    seen = {}
    for item in spec["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    example = response["content"]["application/problem+json"]["example"]
                    assert example["status"] == int(status)
                    assert example["type"].startswith("urn:clusterbench:problem:")
                    seen[status] = example["detail"]
    assert {"400", "406", "413", "415", "422"} <= set(seen)
    assert len(set(seen.values())) == len(seen)


def test_dataset_has_no_default_a_generated_client_would_send() -> None:
    # Check that `dataset` defaults to null (a generated client sent "digits" beside inline
    # X and got 422), its description saying digits is used, and that a stability run's
    # schema has no `random_state` (refused there; its default 0 was sent too).
    spec = json.loads(DEFAULT_PATH.read_text())
    schemas = spec["components"]["schemas"]
    for name in ("BenchmarkRequest", "StabilityRequest", "SweepRequest"):
        dataset = schemas[name]["properties"]["dataset"]
        assert dataset.get("default") is None, name
        assert "`digits`" in dataset["description"], name
    assert "random_state" not in schemas["StabilityRequest"]["properties"]


def test_headers_and_binary_answers_are_declared() -> None:
    # Check that every route answering 304 declares If-None-Match, every route answering a
    # job (202) declares Prefer, and every answer that is not text is a binary string.
    spec = json.loads(DEFAULT_PATH.read_text())
    preferring = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
            responses = operation["responses"]
            assert ("304" in responses) == ("If-None-Match" in headers), (method, path)
            assert ("202" in responses) == ("Prefer" in headers), (method, path)
            if "Prefer" in headers:
                preferring.append(path)
            for response in responses.values():
                for media_type, media in response.get("content", {}).items():
                    if media_type.startswith(("image/", "text/html", "application/octet")):
                        assert media["schema"] == {"type": "string", "format": "binary"}
    assert {"/v1/benchmarks", "/v1/sweeps", "/v1/stability"} <= set(preferring)
    plot = spec["paths"]["/v1/benchmarks/{benchmark_id}/plot.png"]["get"]["responses"]["200"]
    assert set(plot["content"]) == {"image/png", "application/octet-stream"}
