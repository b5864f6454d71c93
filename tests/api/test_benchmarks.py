"""POST /v1/benchmarks and GET /v1/benchmarks/{id} against scikit-learn called directly."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import make_blobs

from service.datasets import load_builtin
from tests.reference import assert_matches, seed_scores

pytestmark = pytest.mark.anyio

# The seed's printed table (plot_kmeans_digits.md): inertia and the five label scores.
SEED_TABLE = {
    "k-means++": ("69545", "0.598", "0.645", "0.621", "0.469", "0.617"),
    "PCA-based": ("69513", "0.600", "0.647", "0.622", "0.468", "0.618"),
    "random": ("69735", "0.681", "0.723", "0.701", "0.574", "0.698"),
}


async def post(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await client.post("/v1/benchmarks", json=body, headers=headers)


async def test_seed_table_as_text(client: httpx.AsyncClient) -> None:
    # Check that `{}` with Accept: text/plain prints the seed's table with its numbers.
    response = await post(client, {}, accept="text/plain")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert lines[0] == lines[-1] == "_" * 82
    assert lines[1] == "init\t\ttime\tinertia\thomo\tcompl\tv-meas\tARI\tAMI\tsilhouette"
    X, y = load_builtin("digits")
    inits = {"k-means++": "k-means++", "random": "random", "PCA-based": "pca"}
    for line in lines[2:-1]:
        name, fit_time, *numbers = line.split("\t")
        name = name.strip()
        assert tuple(numbers[:6]) == SEED_TABLE[name]
        assert fit_time.endswith("s")
        assert float(fit_time[:-1]) > 0
        silhouette = seed_scores(X, y, inits[name], n_clusters=10)["silhouette"]
        assert numbers[6] == f"{silhouette:.3f}"
    assert [line.split("\t")[0].strip() for line in lines[2:-1]] == list(inits)


async def test_seed_defaults_as_json(client: httpx.AsyncClient) -> None:
    # Check the JSON shape and that every digits number equals scikit-learn's.
    response = await post(client, {})
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == response.headers["etag"].strip('"')
    assert len(body["id"]) == 64
    assert body["dataset"]["name"] == "digits"
    assert body["dataset"]["n_samples"] == 1797
    assert body["dataset"]["n_features"] == 64
    assert body["dataset"]["has_labels"] is True
    assert body["n_clusters"] == 10
    assert body["params"] == {
        "dataset": body["dataset"]["id"],
        "n_clusters": 10,
        "strategies": [
            {"init": "k-means++", "n_init": 4},
            {"init": "random", "n_init": 4},
            {"init": "pca", "n_init": 1},
        ],
        "random_state": 0,
        "scale": True,
        "algorithm": "lloyd",
        "max_iter": 300,
        "tol": 0.0001,
        "silhouette_sample_size": 300,
        "estimator": "kmeans",
    }
    assert body["plot_url"] == f"/v1/benchmarks/{body['id']}/plot.png"
    assert set(body["versions"]) == {"service", "scikit-learn", "numpy"}
    X, y = load_builtin("digits")
    assert [r["init"] for r in body["results"]] == ["k-means++", "random", "pca"]
    for result in body["results"]:
        assert result["fit_time"] > 0
        assert len(result["model_id"]) == 64
        assert_matches(result, seed_scores(X, y, result["init"], n_clusters=10))


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer", "digits"])
async def test_builtin_datasets_match_sklearn(client: httpx.AsyncClient, name: str) -> None:
    # Check each built-in dataset, all three strategies, with non-default parameters.
    request = {"dataset": name, "random_state": 3, "silhouette_sample_size": 100}
    response = await post(client, request)
    assert response.status_code == 200, response.text
    X, y = load_builtin(name)
    n_clusters = np.unique(y).size
    body = response.json()
    assert body["n_clusters"] == n_clusters
    for result in body["results"]:
        expected = seed_scores(
            X, y, result["init"], n_clusters=n_clusters, random_state=3, silhouette_sample_size=100
        )
        assert_matches(result, expected)


@pytest.mark.parametrize("labels", ["int", "str"])
async def test_inline_labelled(client: httpx.AsyncClient, labels: str) -> None:
    # Check inline X with integer or string labels, per-strategy n_init, elkan, no scaling.
    X, y = make_blobs(n_samples=120, centers=3, n_features=5, random_state=4)
    y_sent = y.tolist() if labels == "int" else [f"class-{v}" for v in y]
    request = {
        "X": X.tolist(),
        "y": y_sent,
        "strategies": [{"init": "k-means++", "n_init": 2}, {"init": "random", "n_init": 7}, "pca"],
        "algorithm": "elkan",
        "scale": False,
        "silhouette_sample_size": None,
    }
    response = await post(client, request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dataset"]["name"] is None
    assert body["dataset"]["has_labels"] is True
    assert body["n_clusters"] == 3
    assert [(r["init"], r["n_init"]) for r in body["results"]] == [
        ("k-means++", 2),
        ("random", 7),
        ("pca", 1),
    ]
    for result in body["results"]:
        expected = seed_scores(
            X,
            np.asarray(y_sent),
            result["init"],
            n_clusters=3,
            n_init=result["n_init"],
            algorithm="elkan",
            scale=False,
            silhouette_sample_size=None,
        )
        assert_matches(result, expected)


async def test_inline_unlabelled(client: httpx.AsyncClient) -> None:
    # Check that unlabelled data needs n_clusters and scores only the silhouette.
    X, _ = make_blobs(n_samples=90, centers=4, n_features=4, random_state=2)
    response = await post(client, {"X": X.tolist(), "n_clusters": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dataset"]["has_labels"] is False
    for result in body["results"]:
        expected = seed_scores(X, None, result["init"], n_clusters=4)
        assert_matches(result, expected)
        assert result["homogeneity"] is None
    table = (await post(client, {"X": X.tolist(), "n_clusters": 4}, accept="text/plain")).text
    assert "\t-\t-\t-\t-\t-\t" in table


async def test_cache_hit_headers_and_get(client: httpx.AsyncClient) -> None:
    # Check X-Cache, "cached", ETag, 304 on If-None-Match, and GET by id.
    request = {"dataset": "iris", "strategies": ["random"], "random_state": 11}
    first = await post(client, request)
    second = await post(client, request)
    assert first.headers["x-cache"] == "miss"
    assert first.json()["cached"] is False
    assert second.headers["x-cache"] == "hit"
    assert second.json() == {**first.json(), "cached": True}
    etag = first.headers["etag"]
    assert second.headers["etag"] == etag
    benchmark_id = first.json()["id"]

    not_modified = await post(client, request, **{"if-none-match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag

    got = await client.get(f"/v1/benchmarks/{benchmark_id}")
    assert got.status_code == 200
    assert got.json() == {**first.json(), "cached": True}
    assert got.headers["etag"] == etag
    assert "immutable" in got.headers["cache-control"]
    text = await client.get(f"/v1/benchmarks/{benchmark_id}", headers={"accept": "text/plain"})
    assert text.text.splitlines()[2].startswith("random   \t")
    again = await client.get(f"/v1/benchmarks/{benchmark_id}", headers={"if-none-match": etag})
    assert again.status_code == 304


async def test_unknown_and_malformed_ids(client: httpx.AsyncClient) -> None:
    # Check that an unknown id is 404 and a malformed one 422, both problem+json.
    missing = await client.get(f"/v1/benchmarks/{'a' * 64}")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["detail"] == f"no benchmark with id {'a' * 64}"
    for bad in ["../../etc/passwd", "A" * 64, "a" * 63, "digits"]:
        response = await client.get(f"/v1/benchmarks/{bad}")
        assert response.status_code in (404, 422), bad
        assert response.headers["content-type"] == "application/problem+json"


async def test_same_question_same_id(client: httpx.AsyncClient) -> None:
    # Check that key order, whitespace, written-out defaults and inline-vs-built-in data
    # all give the id of `{}`.
    reference = (await post(client, {})).json()["id"]
    X, y = load_builtin("digits")
    variants: list[bytes] = [
        b"{}",
        b"  {\n  }  ",
        json.dumps(
            {
                "silhouette_sample_size": 300,
                "tol": 0.0001,
                "max_iter": 300,
                "algorithm": "lloyd",
                "scale": True,
                "random_state": 0,
                "strategies": [{"init": "k-means++", "n_init": 4}, "random", {"init": "pca"}],
                "n_clusters": 10,
                "dataset": "digits",
            },
            indent=3,
        ).encode(),
        json.dumps({"tol": 1e-4, "dataset": "digits"}).encode(),
        json.dumps({"X": X.tolist(), "y": y.tolist()}).encode(),
    ]
    for content in variants:
        response = await client.post(
            "/v1/benchmarks", content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["id"] == reference
        assert response.headers["x-cache"] == "hit"


async def test_different_question_different_id(client: httpx.AsyncClient) -> None:
    # Check that a parameter that changes the results changes the id.
    base = {"dataset": "wine", "strategies": ["k-means++"]}
    changes = [
        {"random_state": 1},
        {"n_clusters": 4},
        {"strategies": [{"init": "k-means++", "n_init": 5}]},
        {"strategies": ["random"]},
        {"scale": False},
        {"algorithm": "elkan"},
        {"max_iter": 50},
        {"tol": 0.001},
        {"silhouette_sample_size": 50},
        {"dataset": "iris"},
    ]
    ids = {(await post(client, base)).json()["id"]}
    for change in changes:
        response = await post(client, {**base, **change})
        assert response.status_code == 200, (change, response.text)
        ids.add(response.json()["id"])
    assert len(ids) == len(changes) + 1


async def test_swagger_examples_work_as_they_stand(client: httpx.AsyncClient) -> None:
    # Check that every request example in the OpenAPI document runs as it stands.
    spec = (await client.get("/openapi.json")).json()
    content = spec["paths"]["/v1/benchmarks"]["post"]["requestBody"]["content"]
    examples = content["application/json"]["examples"]
    assert examples
    for name, example in examples.items():
        response = await post(client, example["value"])
        assert response.status_code == 200, (name, response.text)
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text


async def test_accept_negotiation(client: httpx.AsyncClient) -> None:
    # Check that Accept picks JSON or text by preference, and 406 for anything else.
    request = {"dataset": "iris", "strategies": ["k-means++"]}
    both = await post(client, request, accept="text/plain;q=0.5, application/json")
    assert both.headers["content-type"] == "application/json"
    wildcard = await post(client, request, accept="*/*")
    assert wildcard.headers["content-type"] == "application/json"
    text = await post(client, request, accept="text/*")
    assert text.headers["content-type"].startswith("text/plain")
    refused = await post(client, request, accept="image/png")
    assert refused.status_code == 406
    assert "text/plain" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("body", "warning"),
    [
        (
            {"dataset": "iris", "n_clusters": 5},
            "strategy 'pca' takes n_clusters=5 principal components, but the data has only "
            "min(n_samples, n_features)=4; left out of the default strategies",
        ),
        (
            {"X": [[0.0], [0.1], [5.0], [5.2], [9.0], [9.1]], "n_clusters": 2},
            "strategy 'pca' takes n_clusters=2 principal components, but the data has only "
            "min(n_samples, n_features)=1; left out of the default strategies",
        ),
        (
            {"dataset": "iris", "estimator": "bisecting"},
            "strategy 'pca' is not an init of BisectingKMeans (estimator 'bisecting'); "
            "left out of the default strategies",
        ),
    ],
)
async def test_defaults_that_cannot_run_are_left_out(
    client: httpx.AsyncClient, body: dict[str, Any], warning: str
) -> None:
    # Check that a request naming no strategies is answered without the default pca
    # where pca cannot run (it was a 422 about pca, which the client never asked for),
    # with a warning saying why; that this answer has an id of its own (not the one of
    # the same request naming k-means++ and random, whose answer has no such warning);
    # and that a pca the client names is still a 422.
    response = await post(client, body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert [r["init"] for r in data["results"]] == ["k-means++", "random"]
    assert data["params"]["left_out"] == ["pca"]
    assert data["warnings"] == [warning]
    assert data["score_space"] == "input"
    named = await post(client, {**body, "strategies": ["k-means++", "random"]})
    assert named.status_code == 200, named.text
    assert named.json()["id"] != data["id"]
    assert named.json()["warnings"] == []
    assert named.json()["results"][0]["inertia"] == data["results"][0]["inertia"]
    refused = await post(client, {**body, "strategies": ["k-means++", "pca"]})
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert "'pca'" in refused.json()["detail"]
