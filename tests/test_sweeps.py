"""Choosing k: every number of a sweep against scikit-learn, and the recommended k."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sklearn import metrics
from sklearn.datasets import make_blobs
from sklearn.preprocessing import StandardScaler

from service.benchmark import VERSIONS, Strategy, canonical_json
from service.datasets import load_builtin
from service.errors import InvalidParameterError
from service.sweeps import (
    SweepParams,
    build_body,
    check_sweep,
    elbow,
    recommend,
    render_sweep,
    run_sweep,
    sweep_id,
)
from tests.reference import assert_all_match, family_scores
from tests.test_plotting import png_size


def params(ks: range | list[int], *inits: str, **kwargs: object) -> SweepParams:
    n_init = {"k-means++": 4, "random": 4, "pca": 1}
    strategies = tuple(Strategy(init, n_init[init]) for init in inits)
    return SweepParams(dataset="0" * 64, k=tuple(ks), strategies=strategies, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("estimator", ["kmeans", "minibatch", "bisecting"])
def test_sweep_numbers_match_sklearn(estimator: str) -> None:
    # Check that every (k, strategy) of a sweep equals scikit-learn called directly, the
    # internal scores measured on the scaled data KMeans clustered.
    X, y = load_builtin("iris")
    inits = ("k-means++", "random") if estimator == "bisecting" else ("k-means++", "pca")
    results = run_sweep(X, y, params(range(2, 5), *inits, estimator=estimator))
    assert [(r["k"], r["init"]) for r in results] == [(k, i) for k in range(2, 5) for i in inits]
    for r in results:
        expected = family_scores(
            X, y, r["init"], n_clusters=r["k"], estimator=estimator, score_space="clustered"
        )
        assert_all_match(r, expected)
        assert r["fit_time"] > 0


def test_sweep_scores_are_measured_where_kmeans_clustered() -> None:
    # Check the issue's case: on wine the Davies-Bouldin index at k=4 is 1.77 in the
    # scaled space KMeans clustered (20.6 on the unscaled data, an artefact of the
    # features' units), and the answer says where its scores were measured.
    X, y = load_builtin("wine")
    p = params(range(2, 6), "k-means++")
    results = run_sweep(X, y, p)
    Z = StandardScaler().fit_transform(X)
    for r in results:
        labels = family_scores(X, y, "k-means++", n_clusters=r["k"])["labels"]
        np.testing.assert_allclose(
            r["davies_bouldin"], metrics.davies_bouldin_score(Z, labels), rtol=1e-9
        )
        np.testing.assert_allclose(
            r["calinski_harabasz"], metrics.calinski_harabasz_score(Z, labels), rtol=1e-9
        )
    at_4 = next(r for r in results if r["k"] == 4)
    assert round(at_4["davies_bouldin"], 2) == 1.77
    body = build_body("f" * 64, {"n_samples": 178, "n_features": 13}, p, results)
    assert body["score_space"] == "clustered"
    assert body["warnings"] == []


def test_unlabelled_sweep_has_null_label_scores() -> None:
    # Check generated data without labels: label scores null, the rest scikit-learn's
    # (unscaled, the space KMeans clustered is the data as given).
    X, _ = make_blobs(n_samples=150, centers=3, n_features=4, random_state=1)
    for r in run_sweep(X, None, params([2, 4], "random", random_state=4, scale=False)):
        assert r["ari"] is None
        expected = family_scores(X, None, "random", n_clusters=r["k"], random_state=4, scale=False)
        assert_all_match(r, expected)


@pytest.mark.parametrize("true_k", [3, 5, 8])
def test_recommended_k_finds_well_separated_blobs(true_k: int) -> None:
    # Check that silhouette, Davies-Bouldin and Calinski-Harabasz pick the true k of
    # well separated blobs, and the elbow where Kneedle can.
    X, y = make_blobs(
        n_samples=60 * true_k,
        centers=true_k,
        n_features=4,
        cluster_std=0.5,
        center_box=(-30.0, 30.0),
        random_state=true_k,
    )
    results = run_sweep(X, y, params(range(2, 13), "k-means++", scale=False))
    picks = recommend(results)
    assert picks["silhouette"] == picks["davies_bouldin"] == picks["calinski_harabasz"] == true_k
    # Kneedle finds k = 3 and 5; at 8 the inertia curve on 2..12 bends first at 5 (the
    # knee is where the curve is farthest from its chord, which a late k flattens).
    assert picks["elbow"] == (true_k if true_k < 8 else 5)


def test_elbow_is_kneedle() -> None:
    # Check the elbow on a textbook curve, and null where there is no knee to find.
    ks = list(range(1, 10))
    assert elbow(ks, [100, 40, 12, 10, 9, 8.5, 8, 7.8, 7.6]) == 3
    assert elbow([2, 3], [10.0, 5.0]) is None
    assert elbow(ks, [10.0] * 9) is None


def test_recommend_skips_nulls_and_takes_each_ks_best_run() -> None:
    # Check that a null score is skipped and that with two strategies each k counts
    # with the best of them.
    rows = [
        {"k": 2, "init": "a", "inertia": 9.0, "silhouette": 0.1, "davies_bouldin": None,
         "calinski_harabasz": 5.0},
        {"k": 2, "init": "b", "inertia": 8.0, "silhouette": 0.9, "davies_bouldin": None,
         "calinski_harabasz": 1.0},
        {"k": 3, "init": "a", "inertia": 4.0, "silhouette": 0.5, "davies_bouldin": 0.7,
         "calinski_harabasz": 7.0},
    ]  # fmt: skip
    assert recommend(rows) == {
        "silhouette": 2,
        "davies_bouldin": 3,
        "calinski_harabasz": 3,
        "elbow": None,
    }
    assert recommend(rows, "a")["silhouette"] == 3


def test_check_sweep_refuses_impossible_sweeps() -> None:
    # Check that k beyond n_samples - 1, pca beyond n_features at every k and custom are
    # refused, each naming the k or the strategy.
    with pytest.raises(InvalidParameterError, match=r"k=10 is too large for 10 samples"):
        check_sweep(params([2, 10], "random"), n_samples=10, n_features=5)
    with pytest.raises(InvalidParameterError, match=r"at k=6: strategy 'pca'"):
        check_sweep(params([6, 7], "pca", "random"), n_samples=100, n_features=5)
    custom = SweepParams(
        dataset="0" * 64, k=(2,), strategies=(Strategy("custom", 1, ((0.0,), (1.0,))),)
    )
    with pytest.raises(InvalidParameterError, match="cannot use strategy 'custom'"):
        check_sweep(custom, n_samples=100, n_features=1)


def test_sweep_skips_the_k_where_pca_cannot_run() -> None:
    # Check that pca is skipped at each k past min(n_samples, n_features), with a warning
    # naming those k, while the other strategies run at every k and pca at the rest.
    X, y = load_builtin("iris")
    p = params(range(3, 7), "k-means++", "pca")
    check_sweep(p, n_samples=150, n_features=4)
    results = run_sweep(X, y, p)
    assert [(r["k"], r["init"]) for r in results] == [
        (3, "k-means++"), (3, "pca"), (4, "k-means++"), (4, "pca"), (5, "k-means++"),
        (6, "k-means++"),
    ]  # fmt: skip
    for r in results:
        assert_all_match(
            r, family_scores(X, y, r["init"], n_clusters=r["k"], score_space="clustered")
        )
    body = build_body("f" * 64, {"n_samples": 150, "n_features": 4}, p, results)
    assert body["warnings"] == [
        "strategy 'pca' skipped at k=5, 6: it takes n_clusters=5 principal components, "
        "but the data has only min(n_samples, n_features)=4"
    ]
    assert body["recommended_k_by_strategy"]["pca"]["silhouette"] in (3, 4)
    assert render_sweep(body, "iris").startswith(b"\x89PNG")


def test_ids_and_plot() -> None:
    # Check that the id changes with k and strategies, and is not the id the same
    # request had when its scores were measured on the unscaled data (stored answers
    # computed that way are never served as new ones); and that the plot is a PNG, the
    # same bytes each time.
    old = hashlib.sha256(
        canonical_json({"sweep": params([2, 3], "random").as_dict(), "versions": VERSIONS})
    ).hexdigest()
    assert sweep_id(params([2, 3], "random")) != old
    assert sweep_id(params([2, 3], "random")) != sweep_id(params([2, 4], "random"))
    assert sweep_id(params([2, 3], "random")) != sweep_id(params([2, 3], "k-means++"))
    X, y = load_builtin("iris")
    p = params(range(2, 6), "k-means++", "random")
    body = build_body("f" * 64, {"n_samples": 150, "n_features": 4}, p, run_sweep(X, y, p))
    png = render_sweep(body, "iris")
    assert png.startswith(b"\x89PNG")
    assert png == render_sweep(body, "iris")
    assert png_size(png)[0] > png_size(png)[1]
    assert np.isfinite(body["results"][0]["calinski_harabasz"])
