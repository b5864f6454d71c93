"""MiniBatchKMeans' ``batch_size`` and BisectingKMeans' ``bisecting_strategy`` over HTTP:
benchmarks, sweeps and stability runs echo them and give scikit-learn's numbers; another
estimator's parameter is a 422 problem."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import make_blobs

from tests.reference import assert_all_match, family_scores

pytestmark = pytest.mark.anyio

X, Y = make_blobs(n_samples=90, centers=4, n_features=3, random_state=5)
NEW = [
    ({"estimator": "minibatch", "batch_size": 20}, "minibatch"),
    ({"estimator": "bisecting", "bisecting_strategy": "largest_cluster"}, "bisecting"),
]


@pytest.mark.parametrize(("fields", "estimator"), NEW)
async def test_new_parameters_over_http(
    client: httpx.AsyncClient, fields: dict[str, Any], estimator: str
) -> None:
    # Check that a benchmark, a sweep and a stability run with each new parameter echo it
    # and give scikit-learn's numbers, and that the benchmark's id is not the default's.
    name, value = next((k, v) for k, v in fields.items() if k != "estimator")
    options = {name: value}
    data = {"X": X.tolist(), "y": Y.tolist(), "strategies": ["random"]}
    response = await client.post("/v1/benchmarks", json={**data, **fields, "n_clusters": 4})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["params"][name] == value
    expected = family_scores(X, Y, "random", n_clusters=4, estimator=estimator, options=options)
    assert_all_match(result["results"][0], expected)
    default = await client.post(
        "/v1/benchmarks", json={**data, "estimator": estimator, "n_clusters": 4}
    )
    assert default.json()["id"] != result["id"]
    assert name not in default.json()["params"]  # left out at its default, as in the id

    sweep = await client.post("/v1/sweeps", json={**data, **fields, "k": [3, 4]})
    assert sweep.status_code == 200, sweep.text
    assert sweep.json()["params"][name] == value
    for point in sweep.json()["results"]:
        assert_all_match(point, family_scores(X, Y, "random", n_clusters=point["k"],
                                              estimator=estimator, score_space="clustered",
                                              options=options))  # fmt: skip

    run = await client.post("/v1/stability", json={**data, **fields, "n_clusters": 4, "seeds": 2})
    assert run.status_code == 200, run.text
    assert run.json()["params"][name] == value
    per_seed = run.json()["results"][0]["per_seed"]
    for row in per_seed:
        seed = row["random_state"]
        want = family_scores(X, Y, "random", n_clusters=4, estimator=estimator, random_state=seed,
                             score_space="clustered", sample_state=0, options=options)  # fmt: skip
        np.testing.assert_allclose(row["inertia"], want["inertia"], rtol=1e-9)


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/v1/benchmarks", {"batch_size": 50},
         "estimator 'kmeans' (KMeans) has no batch_size parameter: batch_size=50 applies to "
         "'minibatch' only"),
        ("/v1/sweeps", {"estimator": "minibatch", "bisecting_strategy": "largest_cluster"},
         "has no bisecting_strategy parameter: bisecting_strategy='largest_cluster' applies "
         "to 'bisecting' only"),
        ("/v1/stability", {"estimator": "bisecting", "batch_size": 7},
         "estimator 'bisecting' (BisectingKMeans) has no batch_size parameter"),
    ],
)  # fmt: skip
async def test_another_estimators_parameter_is_a_422(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], words: str
) -> None:
    # Check that a parameter the estimator table does not give the estimator is a 422
    # problem naming the field, the estimator and the estimator that takes it.
    response = await client.post(path, json={"dataset": "iris", **body})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert words in response.json()["detail"], response.json()["detail"]
    name = next(k for k in body if k != "estimator")
    assert response.json()["errors"][0]["loc"] == [name]
