"""Bad requests: every one a 4xx application/problem+json saying what and where."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio

XY3 = [[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]]

CASES: list[tuple[str, Any, int, str]] = [
    # (name, body: JSON-able value or raw bytes, status, words the detail must contain)
    ("malformed JSON", b'{"X": [[1, 2', 400, "not valid JSON"),
    ("not an object", [1, 2], 422, "body: must be an object"),
    ("non-numeric", {"X": [[1, "a"], [2, 3]], "n_clusters": 2}, 422, "X[0][1]"),
    ("number as string", {"X": [[1, "1.5"], [2, 3]], "n_clusters": 2}, 422, "X[0][1]"),
    ("boolean", {"X": [[1, 2], [True, 3]], "n_clusters": 2}, 422, "X[1][0]"),
    (
        "NaN",
        b'{"X": [[1, 2], [3, NaN]], "n_clusters": 2}',
        422,
        "X[1][1] is NaN (row 1, column 1)",
    ),
    ("infinity", b'{"X": [[1, -Infinity], [3, 4]], "n_clusters": 2}', 422, "X[0][1] is infinity"),
    ("overflow", b'{"X": [[1, 1e999], [3, 4]], "n_clusters": 2}', 422, "X[0][1]"),
    (
        "null cell",
        {"X": [[1, None], [2, 3]], "n_clusters": 2},
        422,
        "X[0][1] is not a number: None",
    ),
    ("nested cell", {"X": [[1, 2], [3, [4]]], "n_clusters": 2}, 422, "X[1][1] is not a number"),
    ("X an object", {"X": {"a": 1}, "n_clusters": 2}, 422, "X must be an array of rows"),
    ("X a string", {"X": "1,2;3,4", "n_clusters": 2}, 422, "X must be an array of rows"),
    ("row not an array", {"X": [[1, 2], 3], "n_clusters": 2}, 422, "X[1] is not an array"),
    (
        "huge integer",
        b'{"X": [[1, 1' + b"0" * 400 + b'], [3, 4]], "n_clusters": 2}',
        422,
        "too large",
    ),
    ("invalid UTF-8", b'{"dataset": "\xff"}', 400, "not valid JSON"),
    ("deep nesting", b"[" * 100_000, 400, "not valid JSON"),
    (
        "ragged",
        {"X": [[1, 2], [3, 4], [5]], "n_clusters": 2},
        422,
        "row 2 has 1 value, row 0 has 2 values",
    ),
    ("flat X", {"X": [1, 2, 3], "n_clusters": 2}, 422, "X[0]"),
    ("one sample", {"X": [[1, 2]], "n_clusters": 2}, 422, "at least 2 samples; got 1"),
    ("no samples", {"X": [], "n_clusters": 2}, 422, "no rows"),
    ("empty rows", {"X": [[], []], "n_clusters": 2}, 422, "at least 1 feature"),
    ("y too short", {"X": XY3, "y": [0, 1]}, 422, "y has 2 labels but X has 3 samples"),
    ("y mixed", {"X": XY3, "y": [0, "a", 1]}, 422, "y[1] is str"),
    ("y float", {"X": XY3, "y": [0, 1.5, 1]}, 422, "y[1]"),
    ("y without X", {"y": [0, 1]}, 422, "without `X`"),
    ("n_clusters 1", {"n_clusters": 1}, 422, "n_clusters"),
    (
        "n_clusters > n_samples",
        {"X": XY3, "n_clusters": 4},
        422,
        "n_clusters=4 is larger than n_samples=3",
    ),
    (
        "pca too many",
        {"dataset": "iris", "n_clusters": 5, "strategies": ["pca"]},
        422,
        "min(n_samples, n_features)=4",
    ),
    ("pca n_init", {"strategies": [{"init": "pca", "n_init": 3}]}, 422, "n_init must be 1"),
    ("unknown strategy", {"strategies": ["kmeans"]}, 422, "strategies[0]"),
    ("duplicate strategy", {"strategies": ["random", "random"]}, 422, "listed twice"),
    ("no strategies", {"strategies": []}, 422, "strategies"),
    ("n_init 0", {"strategies": [{"init": "random", "n_init": 0}]}, 422, "n_init"),
    ("unknown dataset", {"dataset": "mnist"}, 422, "unknown dataset 'mnist'"),
    ("unknown dataset id", {"dataset": "f" * 64}, 422, "unknown dataset"),
    ("unknown algorithm", {"algorithm": "full"}, 422, "algorithm"),
    ("X and dataset", {"dataset": "iris", "X": XY3}, 422, "not both"),
    ("no labels, no n_clusters", {"X": XY3}, 422, "n_clusters is required"),
    ("single-class labels", {"X": XY3, "y": [1, 1, 1]}, 422, "single class"),
    ("unknown field", {"n_cluster": 3}, 422, "n_cluster"),
    ("negative random_state", {"random_state": -1}, 422, "random_state"),
    ("huge random_state", {"random_state": 2**40}, 422, "random_state"),
    ("negative tol", {"tol": -1}, 422, "tol"),
    ("max_iter 0", {"max_iter": 0}, 422, "max_iter"),
    ("silhouette 1", {"silhouette_sample_size": 1}, 422, "silhouette_sample_size"),
]


@pytest.mark.parametrize(("name", "body", "status", "words"), CASES, ids=[c[0] for c in CASES])
async def test_bad_request_is_a_clear_problem(
    client: httpx.AsyncClient, name: str, body: Any, status: int, words: str
) -> None:
    # Check that a bad request gets its status and a problem+json that says what and where.
    if isinstance(body, bytes):
        response = await client.post(
            "/v1/benchmarks", content=body, headers={"content-type": "application/json"}
        )
    else:
        response = await client.post("/v1/benchmarks", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert set(problem) == {"type", "title", "status", "detail", "errors"}
    assert problem["status"] == status
    assert words in problem["detail"], problem["detail"]
    assert "Traceback" not in response.text


async def test_body_must_be_json(client: httpx.AsyncClient) -> None:
    # Check that a body of another media type is 415, and no body at all runs the defaults.
    response = await client.post(
        "/v1/benchmarks", content=b"{}", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]
    empty = await client.post("/v1/benchmarks")
    assert empty.status_code == 200
    assert empty.json()["n_clusters"] == 10


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    # Check that routing errors are problem+json too.
    missing = await client.get("/v1/nothing")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = await client.delete("/v1/benchmarks")
    assert wrong.status_code == 405
    assert wrong.headers["content-type"] == "application/problem+json"


# Words only pydantic speaks: none may reach a client.
PYDANTIC_WORDS = ("literal[", "StrategySpec", "BenchmarkRequest", "Input should", "Value error")


@pytest.mark.parametrize(
    ("patch", "where", "words"),
    [
        (
            {"strategies": ["k-means++", "kmeans++"]},
            "strategies[1]",
            "unknown strategy 'kmeans++'; use one of 'k-means++', 'random', 'pca'",
        ),
        ({"strategies": [{"init": "random", "n_init": 0}]}, "strategies[0].n_init", ">= 1"),
        ({"strategies": [{"init": "kmeans"}]}, "strategies[0].init", "unknown strategy 'kmeans'"),
        ({"strategies": [{"init": "random", "seed": 1}]}, "strategies[0].seed", "unknown field"),
        ({"strategies": [7]}, "strategies[0]", "a strategy is a name"),
        ({"strategies": "pca"}, "strategies", "must be an array"),
        ({"strategies": []}, "strategies", "at least 1"),
        ({"strategies": ["pca", "pca"]}, "body", "'pca' is listed twice"),
        ({"dataset": 5}, "dataset", "must be a string (got 5)"),
        ({"X": [[1, 2], [3, 4]], "y": [0, 1.5]}, "y[1]", "integer or a string"),
        ({"n_clusters": 1}, "n_clusters", "must be >= 2 (got 1)"),
        ({"n_clusters": "3"}, "n_clusters", "must be an integer (got '3')"),
        ({"random_state": -1}, "random_state", "must be >= 0"),
        ({"scale": "yes"}, "scale", "must be true or false (got 'yes')"),
        (
            {"algorithm": "full"},
            "algorithm",
            "unknown algorithm 'full'; use one of 'lloyd', 'elkan'",
        ),
        ({"max_iter": 0}, "max_iter", "must be >= 1"),
        ({"tol": -1}, "tol", "must be >= 0"),
        ({"silhouette_sample_size": 1}, "silhouette_sample_size", "must be >= 2"),
        ({"n_init": 3}, "n_init", "unknown field; the fields are dataset, X, y"),
    ],
)
async def test_request_errors_speak_the_apis_words(
    client: httpx.AsyncClient, patch: dict[str, Any], where: str, words: str
) -> None:
    # Check that each field's bad value is named by its JSON path and explained in the
    # API's terms, with no pydantic class, union branch or message template in the answer.
    response = await client.post("/v1/benchmarks", json={"dataset": "iris", **patch})
    assert response.status_code == 422
    body = response.json()
    assert f"{where}: " in body["detail"], body["detail"]
    assert words in body["detail"], body["detail"]
    assert len(body["errors"]) == 1, body["errors"]
    for word in PYDANTIC_WORDS:
        assert word not in response.text, response.text


async def test_query_errors_speak_the_apis_words(client: httpx.AsyncClient) -> None:
    # Check that a bad query parameter is explained the same way.
    response = await client.post(
        "/v1/datasets", params={"label_column": "x" * 1001}, content=b"a\n1\n2\n"
    )
    assert response.status_code == 422
    assert "query.label_column: must be at most 1000 characters long" in response.json()["detail"]
