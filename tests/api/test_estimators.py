"""Estimators and custom centres over HTTP: JSON, text, plots and problems."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import make_blobs

from service.plotting import figure_size_px
from tests.helpers import png_size
from tests.reference import assert_all_match, family_scores

pytestmark = pytest.mark.anyio

X, Y, TRUTH = make_blobs(
    n_samples=120, centers=3, n_features=3, random_state=2, return_centers=True
)


async def post(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await client.post("/v1/benchmarks", json=body, headers=headers)


@pytest.mark.parametrize(
    ("estimator", "strategies"),
    [
        ("minibatch", ["k-means++", "random", "pca", "custom"]),
        ("bisecting", ["k-means++", "random"]),
        ("kmeans", ["custom", "pca"]),
    ],
)
async def test_estimators_over_http(
    client: httpx.AsyncClient, estimator: str, strategies: list[str]
) -> None:
    # Check each estimator's JSON numbers against scikit-learn, its text table and its
    # plot (one panel per strategy, custom centres included).
    items: list[Any] = [
        {"init": "custom", "centers": (TRUTH + 0.3).tolist()} if s == "custom" else s
        for s in strategies
    ]
    body = {"X": X.tolist(), "y": Y.tolist(), "estimator": estimator, "strategies": items}
    response = await post(client, body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["params"]["estimator"] == estimator
    for result, init in zip(data["results"], strategies, strict=True):
        expected = family_scores(X, Y, init, n_clusters=3, estimator=estimator, centers=TRUTH + 0.3)
        assert_all_match(result, expected)
    text = await post(client, body, accept="text/plain")
    lines = text.text.splitlines()
    if estimator == "kmeans":
        assert lines[0] == "_" * 82
    else:
        assert lines[0].startswith(f"estimator: {estimator} (")
    assert [line.split("\t")[0].strip() for line in lines[-len(strategies) - 1 : -1]] == [
        "PCA-based" if s == "pca" else s for s in strategies
    ]
    plot = await client.get(data["plot_url"])
    assert plot.status_code == 200, plot.text
    assert png_size(plot.content) == figure_size_px(len(strategies))
    model = await client.get(f"/v1/models/{data['results'][0]['model_id']}")
    assert model.status_code == 200
    assert model.json()["n_iter"] == data["results"][0]["n_iter"]


async def test_default_estimator_keeps_the_id(client: httpx.AsyncClient) -> None:
    # Check that writing the default estimator out gives the same id as leaving it out.
    plain = await post(client, {"dataset": "iris", "strategies": ["random"]})
    written = await post(
        client, {"dataset": "iris", "strategies": ["random"], "estimator": "kmeans"}
    )
    other = await post(
        client, {"dataset": "iris", "strategies": ["random"], "estimator": "minibatch"}
    )
    assert plain.json()["id"] == written.json()["id"] != other.json()["id"]
    assert written.headers["x-cache"] == "hit"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (
            {"estimator": "bisecting", "strategies": ["random", "pca"]},
            "estimator 'bisecting' (BisectingKMeans) does not take strategy 'pca'",
        ),
        (
            {
                "dataset": "iris",
                "estimator": "bisecting",
                "strategies": [{"init": "custom", "centers": [[0, 0, 0, 0]] * 3}],
            },
            "does not take strategy 'custom'",
        ),
        ({"estimator": "minibatch", "algorithm": "elkan"}, "has no algorithm parameter"),
        (
            {"strategies": ["k-means++", {"init": "custom", "centers": [[0.0] * 64] * 9}]},
            "strategies[1].centers: expected 10 rows (n_clusters), got 9",
        ),
        (
            {"dataset": "iris", "strategies": [{"init": "custom", "centers": [[0, 0, 0]] * 3}]},
            "strategies[0].centers[0]: expected 4 values (n_features), got 3",
        ),
        ({"strategies": ["custom"]}, "strategy 'custom' is an object"),
        ({"strategies": [{"init": "custom"}]}, "needs `centers`"),
        ({"strategies": [{"init": "random", "centers": [[0]]}]}, "belong to strategy 'custom'"),
        (
            {"strategies": [{"init": "custom", "centers": [[0]], "n_init": 3}]},
            "n_init must be 1",
        ),
        ({"estimator": "dbscan"}, "estimator"),
    ],
)
async def test_bad_estimator_requests(
    client: httpx.AsyncClient, body: dict[str, Any], words: str
) -> None:
    # Check that each bad pair or bad centres is a 422 problem saying what and where.
    response = await post(client, body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert words in response.json()["detail"], response.json()["detail"]


async def test_non_finite_centres_are_named(client: httpx.AsyncClient) -> None:
    # Check that NaN in custom centres (JSON's NaN, which the body reader accepts) is a
    # 422 naming the value's place.
    centers = np.zeros((3, 4)).tolist()
    raw = (
        '{"dataset": "iris", "strategies": [{"init": "custom", "centers": '
        + str(centers).replace("0.0]", "NaN]", 1)
        + "}]}"
    )
    response = await client.post(
        "/v1/benchmarks", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert "strategies[0].centers[0][3] is nan" in response.json()["detail"]


async def test_centres_written_differently_hash_alike(client: httpx.AsyncClient) -> None:
    # Check that 0, 0.0 and -0.0 in custom centres are one question (one id).
    ids = set()
    for zero in ("0", "0.0", "-0.0"):
        raw = (
            '{"dataset": "iris", "strategies": [{"init": "custom", "centers": '
            f"[[{zero}, 1, 1, 1], [5, 3, 1, 0.5], [7, 3, 6, 2]]}}]}}"
        )
        response = await client.post(
            "/v1/benchmarks", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 200, response.text
        ids.add(response.json()["id"])
    assert len(ids) == 1
