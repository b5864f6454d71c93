"""``"implementation": "onedal"``: Intel oneDAL's K-Means through scikit-learn-intelex.

Its numbers are its own: each is checked against ``sklearnex.cluster.KMeans`` called
directly in the same pipeline (and shown to differ from scikit-learn's somewhere, so the
request really reached oneDAL); the answer names the package's version, ids change with
it, and the other estimators, and a server without the package, refuse it with a 422."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import make_blobs

from service import benchmark as bm
from service.benchmark import BenchmarkParams, Strategy, check_params, run_benchmark
from service.datasets import load_builtin
from service.errors import InvalidParameterError
from tests.reference import assert_all_match, family_scores

N_INIT = {"k-means++": 4, "random": 4, "pca": 1}
VERSION = importlib.metadata.version("scikit-learn-intelex")


def bench(n_clusters: int, *inits: str, **kwargs: Any) -> BenchmarkParams:
    strategies = tuple(Strategy(init, N_INIT[init]) for init in inits)
    return BenchmarkParams(dataset="0" * 64, n_clusters=n_clusters, strategies=strategies, **kwargs)


@pytest.mark.parametrize("scale", [True, False])
def test_onedal_numbers_are_sklearnex_called_directly(scale: bool) -> None:
    X, y = load_builtin("digits")
    params = bench(10, "k-means++", "random", "pca", implementation="onedal", scale=scale)
    outcomes = run_benchmark(X, y, params)
    for outcome in outcomes:
        got = {"inertia": outcome.inertia, "n_iter": outcome.n_iter, **outcome.scores}
        expected = family_scores(
            X, y, outcome.init, n_clusters=10, scale=scale, implementation="onedal"
        )
        assert_all_match(got, expected)
    # The request reached oneDAL: its fits are not scikit-learn's to the last digit.
    stock = run_benchmark(X, y, bench(10, "k-means++", "random", "pca", scale=scale))
    assert any(a.inertia != b.inertia for a, b in zip(outcomes, stock, strict=True))


def test_the_implementation_is_in_the_id_and_its_version_in_the_answer() -> None:
    onedal = bench(10, "k-means++", implementation="onedal")
    stock = bench(10, "k-means++")
    assert bm.benchmark_id(onedal) != bm.benchmark_id(stock)
    assert bm.model_id(onedal, onedal.strategies[0]) != bm.model_id(stock, stock.strategies[0])
    assert "implementation" not in stock.as_dict()  # left out at its default: old ids stay
    assert onedal.as_dict()["implementation"] == "onedal"
    assert bm.versions(onedal) == {**bm.VERSIONS, "scikit-learn-intelex": VERSION}
    assert bm.versions(stock) == bm.VERSIONS


@pytest.mark.parametrize("estimator", ["minibatch", "bisecting"])
def test_other_estimators_refuse_onedal(estimator: str) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        check_params(bench(3, "random", estimator=estimator, implementation="onedal"), 100, 4)
    assert "implementation 'onedal'" in str(caught.value)
    assert "'kmeans'" in str(caught.value)
    assert caught.value.errors[0]["loc"] == ["implementation"]


def test_a_server_without_the_package_refuses_onedal(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "scikit-learn-intelex":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(InvalidParameterError) as caught:
        check_params(bench(3, "random", implementation="onedal"), 100, 4)
    assert "scikit-learn-intelex" in str(caught.value)
    assert "clusterbench[onedal]" in str(caught.value)


@pytest.mark.anyio
async def test_onedal_over_http(client: httpx.AsyncClient) -> None:
    X, y = make_blobs(n_samples=300, centers=4, n_features=5, random_state=2)
    data = {"X": X.tolist(), "y": y.tolist(), "n_clusters": 4}
    answer = await client.post(
        "/v1/benchmarks", json={**data, "strategies": ["k-means++"], "implementation": "onedal"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["params"]["implementation"] == "onedal"
    assert body["versions"]["scikit-learn-intelex"] == VERSION
    expected = family_scores(X, y, "k-means++", n_clusters=4, implementation="onedal")
    assert_all_match(body["results"][0], expected)

    sweep = await client.post(
        "/v1/sweeps",
        json={"X": data["X"], "y": data["y"], "k": [3, 4], "implementation": "onedal"},
    )
    assert sweep.status_code == 200, sweep.text
    assert sweep.json()["versions"]["scikit-learn-intelex"] == VERSION
    for point in sweep.json()["results"]:
        expected = family_scores(
            X, y, point["init"], n_clusters=point["k"], implementation="onedal",
            score_space="clustered",
        )  # fmt: skip
        assert_all_match(point, expected)

    refused = await client.post(
        "/v1/benchmarks", json={**data, "estimator": "bisecting", "implementation": "onedal"}
    )
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "implementation" in refused.json()["detail"]
    assert np.isfinite(body["results"][0]["inertia"])
