"""KMeans, MiniBatchKMeans and BisectingKMeans, every allowed strategy, custom centres,
Davies-Bouldin and Calinski-Harabasz: each number against scikit-learn called directly."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from service.benchmark import (
    ALLOWED_STRATEGIES,
    VERSIONS,
    BenchmarkParams,
    Strategy,
    benchmark_id,
    canonical_json,
    check_params,
    format_table,
    model_id,
    run_benchmark,
)
from service.datasets import load_builtin
from service.errors import InvalidCentersError, InvalidParameterError, UnsupportedStrategyError
from tests.reference import assert_all_match, family_scores

N_INIT = {"k-means++": 4, "random": 4, "pca": 1, "custom": 1}
PAIRS = [(e, s) for e, allowed in ALLOWED_STRATEGIES.items() for s in sorted(allowed)]


def class_means(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Custom centres a user might write: the mean of each class."""
    return np.stack([X[y == label].mean(axis=0) for label in np.unique(y)])


def strategy(init: str, centers: np.ndarray | None = None) -> Strategy:
    rows = None if centers is None else tuple(tuple(map(float, r)) for r in centers)
    return Strategy(init, N_INIT[init], rows)


def params(n_clusters: int, *strategies: Strategy, **kwargs: Any) -> BenchmarkParams:
    return BenchmarkParams(dataset="0" * 64, n_clusters=n_clusters, strategies=strategies, **kwargs)


def as_dict(outcome: Any) -> dict[str, Any]:
    return {"inertia": outcome.inertia, "n_iter": outcome.n_iter, **outcome.scores}


@pytest.mark.parametrize("name", ["digits", "iris", "wine", "breast_cancer"])
@pytest.mark.parametrize(("estimator", "init"), PAIRS)
def test_builtins_match_sklearn(name: str, estimator: str, init: str) -> None:
    # Check that each estimator with each strategy it takes gives scikit-learn's numbers
    # (Davies-Bouldin and Calinski-Harabasz included) on every built-in dataset.
    X, y = load_builtin(name)
    n_clusters = np.unique(y).size
    centers = class_means(X, y) if init == "custom" else None
    (outcome,) = run_benchmark(
        X, y, params(n_clusters, strategy(init, centers), estimator=estimator)
    )
    expected = family_scores(
        X, y, init, n_clusters=n_clusters, estimator=estimator, centers=centers
    )
    assert_all_match(as_dict(outcome), expected)


@pytest.mark.parametrize("labelled", [True, False])
@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize(("estimator", "init"), PAIRS)
def test_blobs_match_sklearn(estimator: str, init: str, scale: bool, labelled: bool) -> None:
    # Check generated data with and without labels, scaled or not: same numbers as
    # scikit-learn, the label scores None without labels.
    X, y, truth = make_blobs(
        n_samples=300, centers=4, n_features=5, random_state=3, return_centers=True
    )
    labels = y if labelled else None
    centers = truth + 0.5 if init == "custom" else None
    (outcome,) = run_benchmark(
        X,
        labels,
        params(4, strategy(init, centers), estimator=estimator, scale=scale, random_state=5),
    )
    expected = family_scores(
        X,
        labels,
        init,
        n_clusters=4,
        estimator=estimator,
        centers=centers,
        scale=scale,
        random_state=5,
    )
    assert_all_match(as_dict(outcome), expected)
    if not labelled:
        assert outcome.scores["ari"] is None


def test_custom_centres_mean_what_the_user_wrote() -> None:
    # Check that with scale on, centres written in the data's units start KMeans where
    # they say: the true centres of well separated blobs give back their clusters.
    X, y, truth = make_blobs(
        n_samples=200, centers=3, n_features=2, random_state=0, return_centers=True, cluster_std=0.3
    )
    X = X * [1.0, 1000.0]
    truth = truth * [1.0, 1000.0]
    (outcome,) = run_benchmark(X, y, params(3, strategy("custom", truth), max_iter=1))
    assert outcome.scores["ari"] == 1.0
    np.testing.assert_allclose(outcome.model.centers_in_feature_space(), truth, rtol=0.1)


def test_unsupported_pairs_are_refused() -> None:
    # Check that BisectingKMeans refuses pca and custom centres, and MiniBatchKMeans an
    # algorithm, each with a problem naming the pair.
    for init in ("pca", "custom"):
        bad = params(3, strategy("random"), strategy(init, np.zeros((3, 4))), estimator="bisecting")
        with pytest.raises(UnsupportedStrategyError, match=f"'bisecting'.*'{init}'") as info:
            check_params(bad, n_samples=50, n_features=4)
        assert info.value.errors[0]["loc"] == ["strategies", 1]
    with pytest.raises(InvalidParameterError, match=r"'minibatch'.*no algorithm"):
        check_params(params(3, strategy("random"), estimator="minibatch", algorithm="elkan"), 50, 4)
    check_params(params(3, strategy("random"), estimator="bisecting", algorithm="elkan"), 50, 4)


@pytest.mark.parametrize(
    ("centers", "message", "loc"),
    [
        (np.zeros((9, 4)), r"strategies\[1\]\.centers: expected 10 rows \(n_clusters\), got 9", []),
        (np.zeros((10, 3)), r"strategies\[1\]\.centers\[0\]: expected 4 values", [0]),
        (np.where(np.eye(10, 4) > 0, np.nan, 0.0), r"centers\[0\]\[0\] is nan", [0, 0]),
        (np.full((10, 4), np.inf), r"centers\[0\]\[0\] is inf", [0, 0]),
        (np.full((10, 4), 1e200), r"strategies\[1\]\.centers\[0\]\[0\] is 1e\+200", [0, 0]),
    ],
)
def test_bad_centres_are_named(centers: np.ndarray, message: str, loc: list[int]) -> None:
    # Check that custom centres of the wrong shape or not finite are refused, naming
    # the strategy, the row and the value.
    bad = params(10, strategy("random"), strategy("custom", centers))
    with pytest.raises(InvalidCentersError, match=message) as info:
        check_params(bad, n_samples=100, n_features=4)
    assert info.value.errors[0]["loc"] == ["strategies", 1, "centers", *loc]


def test_ids_of_todays_requests_stay_and_new_fields_change_them() -> None:
    # Check that a request without estimator, centres, left-out defaults or the real
    # tables' missing and normalize hashes as before there were any (cached ids stay
    # valid), and that estimator and centres change the id.
    base = params(3, strategy("k-means++"), strategy("random"))
    before = base.model_dump()
    del before["estimator"], before["left_out"], before["missing"], before["normalize"]
    del before["batch_size"], before["bisecting_strategy"], before["implementation"]
    for s in before["strategies"]:
        del s["centers"]
    old_id = hashlib.sha256(canonical_json({"benchmark": before, "versions": VERSIONS})).hexdigest()
    assert benchmark_id(base) == old_id
    others = [
        params(3, strategy("k-means++"), strategy("random"), estimator="minibatch"),
        params(3, strategy("k-means++"), strategy("random"), estimator="bisecting"),
        params(3, strategy("k-means++"), strategy("custom", np.zeros((3, 2)))),
        params(3, strategy("k-means++"), strategy("custom", np.ones((3, 2)))),
    ]
    assert len({old_id, *map(benchmark_id, others)}) == 5
    assert model_id(base, base.strategies[0]) != model_id(others[0], others[0].strategies[0])
    assert model_id(others[2], others[2].strategies[1]) != model_id(
        others[3], others[3].strategies[1]
    )


def test_table_names_the_estimator() -> None:
    # Check that the seed's table is unchanged for KMeans and names another estimator.
    row = {"init": "custom", "fit_time": 0.01, "inertia": 5.0, "silhouette": 0.5}
    row |= dict.fromkeys(("homogeneity", "completeness", "v_measure", "ari", "ami"))
    assert format_table([row]).splitlines()[0] == "_" * 82
    lines = format_table([row], "bisecting").splitlines()
    assert lines[0] == "estimator: bisecting (BisectingKMeans)"
    assert lines[1] == "_" * 82
    assert lines[3].startswith("custom   \t0.010s\t5\t-")
