"""Seed stability against scikit-learn called directly, one seed at a time."""

from __future__ import annotations

import functools
import hashlib
import itertools

import numpy as np
import pytest
from sklearn import metrics
from sklearn.datasets import make_blobs

from service.benchmark import VERSIONS, BenchmarkParams, Strategy, canonical_json
from service.datasets import load_builtin
from service.schemas import StabilityResult
from service.stability import (
    SUMMARISED,
    StabilityParams,
    build_body,
    format_table,
    run_stability,
    seed_list,
    stability_id,
)
from tests.helpers import traced_peak
from tests.reference import ALL_SCORE_KEYS, family_scores


def params(n_clusters: int, seeds: tuple[int, ...], *inits: str, **kw: object) -> StabilityParams:
    n_init = {"k-means++": 4, "random": 4, "pca": 1}
    strategies = tuple(Strategy(init, n_init[init]) for init in inits)
    bench = BenchmarkParams(dataset="0" * 64, n_clusters=n_clusters, strategies=strategies, **kw)  # type: ignore[arg-type]
    return StabilityParams(bench, seeds)


@pytest.mark.parametrize(
    ("name", "estimator"), [("iris", "kmeans"), ("wine", "minibatch"), ("iris", "bisecting")]
)
def test_summary_matches_sklearn_seed_by_seed(name: str, estimator: str) -> None:
    # Check each seed's numbers, their mean and std, and the pairwise ARI against
    # scikit-learn run with each random_state, the internal scores measured on the
    # scaled data KMeans clustered, the silhouette on the one sample of random_state 0.
    X, y = load_builtin(name)
    k = np.unique(y).size
    seeds = (0, 3, 7, 11)
    results = run_stability(X, y, params(k, seeds, "k-means++", "random", estimator=estimator))
    for r in results:
        expected = [
            family_scores(
                X,
                y,
                r["init"],
                n_clusters=k,
                estimator=estimator,
                random_state=s,
                score_space="clustered",
                sample_state=0,
            )
            for s in seeds
        ]
        for key in ("inertia", *ALL_SCORE_KEYS):
            values = np.array([e[key] for e in expected], dtype=np.float64)
            np.testing.assert_allclose(r[key]["mean"], values.mean(), rtol=1e-9, err_msg=key)
            np.testing.assert_allclose(r[key]["std"], values.std(), rtol=1e-9, atol=1e-12)
        for row, e, seed in zip(r["per_seed"], expected, seeds, strict=True):
            assert row["random_state"] == seed
            np.testing.assert_allclose(row["inertia"], e["inertia"], rtol=1e-9)
        pairs = [
            metrics.adjusted_rand_score(a["labels"], b["labels"])
            for a, b in itertools.combinations(expected, 2)
        ]
        np.testing.assert_allclose(r["seed_ari"]["mean"], np.mean(pairs), rtol=1e-9)
        np.testing.assert_allclose(r["seed_ari"]["min"], np.min(pairs), rtol=1e-9)
        assert r["n_seeds"] == 4
        assert r["fit_time"]["mean"] > 0


def test_unlabelled_and_single_seed() -> None:
    # Check null label scores without labels, and no pairwise ARI with a single seed;
    # a deterministic start (pca) agrees with itself perfectly.
    X, _ = make_blobs(n_samples=120, centers=3, n_features=4, random_state=2)
    (one,) = run_stability(X, None, params(3, (5,), "random"))
    assert one["ari"] == {"mean": None, "std": None}
    assert one["seed_ari"] == {"mean": None, "min": None}
    assert one["inertia"]["std"] == 0.0
    (pca,) = run_stability(X, None, params(3, (0, 1, 2), "pca"))
    assert pca["seed_ari"] == {"mean": 1.0, "min": 1.0}


def test_a_partition_that_does_not_change_has_no_spread() -> None:
    # Check the case: breast_cancer, pca, 10 seeds find one partition (pairwise
    # ARI 1); its silhouette, on one sample drawn for the whole run, has std 0 (it was
    # 0.021 with a sample redrawn per seed) and equals scikit-learn's on the scaled data.
    X, y = load_builtin("breast_cancer")
    (r,) = run_stability(X, y, params(2, tuple(range(10)), "pca"))
    assert r["seed_ari"] == {"mean": 1.0, "min": 1.0}
    for name in ("silhouette", "davies_bouldin", "calinski_harabasz", "ari", "inertia"):
        # Up to rounding: the seeds may number the same clusters in another order.
        assert r[name]["std"] < 1e-12 * abs(r[name]["mean"]), name
    expected = family_scores(X, y, "pca", n_clusters=2, score_space="clustered", sample_state=0)
    np.testing.assert_allclose(r["silhouette"]["mean"], expected["silhouette"], rtol=1e-9)


def test_seeds_ids_and_table() -> None:
    # Check seeds' defaults, that the id follows them and is not the id the same request
    # had when its scores were measured the old way, and the ± table.
    assert seed_list(3) == (0, 1, 2)
    assert seed_list([4, 2, 4]) == (4, 2)
    assert stability_id(params(3, (0, 1), "random")) != stability_id(params(3, (0, 2), "random"))
    old = hashlib.sha256(
        canonical_json({"stability": params(3, (0, 1), "random").as_dict(), "versions": VERSIONS})
    ).hexdigest()
    assert stability_id(params(3, (0, 1), "random")) != old
    X, y = load_builtin("iris")
    p = params(3, (0, 1, 2), "k-means++", "pca")
    body = build_body(
        "a" * 64,
        {"id": "0" * 64, "name": "iris", "n_samples": 150, "n_features": 4, "has_labels": True},
        p,
        run_stability(X, y, p),
    )
    assert body["score_space"] == "clustered"
    assert body["warnings"] == []
    assert body["params"]["seeds"] == [0, 1, 2]
    assert "random_state" not in body["params"]
    lines = format_table(StabilityResult.model_validate(body)).splitlines()
    assert lines[0] == "3 seed(s): random_state in [0, 1, 2]"
    assert lines[2].startswith("init\t\ttime\t\tinertia")
    cells = lines[3].split("\t")
    assert cells[0].strip() == "k-means++"
    assert cells[1].endswith("s")
    assert "±" in cells[1]
    assert len(cells) == 10
    assert lines[4].startswith("PCA-based")
    assert lines[5] == lines[1]
    assert lines[6].endswith("measured in the clustered space")
    assert set(SUMMARISED) <= set(body["results"][0])


def test_the_labels_kept_for_the_pairwise_ari_are_compact() -> None:
    # Check that each seed's labels, kept for the pairwise ARI, cost about a byte per
    # sample (KMeans' int32 cost 4: 4.5 GB at 20M samples x 100 seeds, still rising):
    # 8 seeds more add little more than 8 bytes per sample to the peak.
    X, _ = make_blobs(n_samples=100_000, centers=3, n_features=2, random_state=0)
    peaks = []
    for seeds in ((0, 1), tuple(range(10))):
        asked = params(3, seeds, "random", silhouette_sample_size=100)
        _, peak = traced_peak(functools.partial(run_stability, X, None, asked))
        peaks.append(peak)
    assert peaks[1] - peaks[0] < 2 * 8 * X.shape[0], peaks
