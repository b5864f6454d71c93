"""The benchmark kernel against scikit-learn called directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from threadpoolctl import threadpool_info, threadpool_limits

from service import kmeans_patches
from service.benchmark import (
    BenchmarkParams,
    Strategy,
    benchmark_id,
    check_params,
    format_table,
    kernel,
    model_id,
    run_benchmark,
)
from service.datasets import load_arrays, load_builtin
from service.errors import InvalidParameterError
from service.threads import SERIAL_MAX_CELLS, SERIAL_MAX_SAMPLES
from tests.helpers import traced_peak
from tests.reference import assert_matches, seed_scores


def _params(n_clusters: int, *inits: str, **kwargs: object) -> BenchmarkParams:
    n_init = {"k-means++": 4, "random": 4, "pca": 1}
    strategies = tuple(Strategy(init, n_init[init]) for init in inits)
    return BenchmarkParams(dataset="0" * 64, n_clusters=n_clusters, strategies=strategies, **kwargs)  # type: ignore[arg-type]


def _as_dict(outcome: object) -> dict[str, object]:
    return {"inertia": outcome.inertia, "n_iter": outcome.n_iter, **outcome.scores}  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["digits", "iris", "wine", "breast_cancer"])
@pytest.mark.parametrize("init", ["k-means++", "random", "pca"])
def test_builtin_matches_sklearn(name: str, init: str) -> None:
    # Check that every score equals the seed's computation on each built-in dataset.
    X, y = load_builtin(name)
    n_clusters = np.unique(y).size
    (outcome,) = run_benchmark(X, y, _params(n_clusters, init))
    assert_matches(_as_dict(outcome), seed_scores(X, y, init, n_clusters=n_clusters))


@pytest.mark.parametrize(
    "options",
    [
        {"scale": False},
        {"algorithm": "elkan"},
        {"random_state": 7, "silhouette_sample_size": None},
        {"max_iter": 5, "tol": 0.0},
    ],
)
def test_parameters_are_passed_to_kmeans(options: dict[str, object]) -> None:
    # Check that scale, algorithm, random_state, max_iter, tol and the silhouette sample
    # reach scikit-learn exactly as given.
    X, y = make_blobs(n_samples=400, centers=4, n_features=6, random_state=1)
    (outcome,) = run_benchmark(X, y, _params(4, "k-means++", **options))
    expected = seed_scores(X, y, "k-means++", n_clusters=4, **options)  # type: ignore[arg-type]
    assert_matches(_as_dict(outcome), expected)


def test_unlabelled_data_scores_only_silhouette() -> None:
    # Check that without labels the label scores are None and silhouette still matches.
    X, _ = make_blobs(n_samples=200, centers=3, n_features=4, random_state=0)
    outcomes = run_benchmark(X, None, _params(3, "k-means++", "random", "pca"))
    for outcome in outcomes:
        expected = seed_scores(X, None, outcome.init, n_clusters=3)
        assert_matches(_as_dict(outcome), expected)


def test_model_predicts_like_the_pipeline() -> None:
    # Check that the stored centres reproduce the fitted model's cluster assignment.
    X, y = load_builtin("iris")
    (outcome,) = run_benchmark(X, y, _params(3, "k-means++"))
    model = outcome.model
    scaled = (X - model.scaler_mean) / model.scaler_scale
    distances = ((scaled[:, None, :] - model.cluster_centers[None]) ** 2).sum(-1)
    expected = seed_scores(X, y, "k-means++", n_clusters=3)["labels"]
    np.testing.assert_array_equal(distances.argmin(1), expected)
    np.testing.assert_allclose(model.centers_in_feature_space().mean(0), X.mean(0), rtol=0.2)


def test_degenerate_clusters_warn_not_fail() -> None:
    # Check that scikit-learn's warnings reach the outcome, and that silhouette is None
    # (with a warning saying why) when KMeans finds a single distinct cluster.
    X = np.ones((10, 2))
    (outcome,) = run_benchmark(X, None, _params(2, "k-means++"))
    assert any(w.startswith("ConvergenceWarning") for w in outcome.warnings)
    assert outcome.scores["silhouette"] is None
    assert any("silhouette is undefined for 1 distinct cluster" in w for w in outcome.warnings)


def test_check_params_rejects_impossible_requests() -> None:
    # Check that n_clusters > n_samples and pca beyond min(n_samples, n_features) are refused.
    with pytest.raises(InvalidParameterError, match="n_samples=5"):
        check_params(_params(6, "random"), n_samples=5, n_features=10)
    with pytest.raises(InvalidParameterError, match=r"min\(n_samples, n_features\)=3"):
        check_params(_params(4, "pca"), n_samples=50, n_features=3)
    check_params(_params(3, "pca"), n_samples=50, n_features=3)


def test_ids_change_with_anything_that_changes_results() -> None:
    # Check that the request hash depends on each parameter, and model ids only on the fit's.
    base = _params(3, "k-means++", "random")
    variants = [
        _params(4, "k-means++", "random"),
        _params(3, "random", "k-means++"),
        _params(3, "k-means++", "random", random_state=1),
        _params(3, "k-means++", "random", scale=False),
        _params(3, "k-means++", "random", algorithm="elkan"),
        _params(3, "k-means++", "random", max_iter=10),
        _params(3, "k-means++", "random", tol=1e-3),
        _params(3, "k-means++", "random", silhouette_sample_size=None),
    ]
    ids = {benchmark_id(base), *(benchmark_id(v) for v in variants)}
    assert len(ids) == len(variants) + 1
    other = _params(3, "k-means++", "random", silhouette_sample_size=50)
    assert model_id(base, base.strategies[0]) == model_id(other, other.strategies[0])
    assert model_id(base, base.strategies[0]) != model_id(base, base.strategies[1])


def test_format_table_is_the_seeds() -> None:
    # Check the seed's layout: rule, header, one tab-separated row per strategy, rule.
    row = {
        "init": "pca",
        "fit_time": 0.0123,
        "inertia": 69513.44,
        "homogeneity": 0.6,
        "completeness": 0.647,
        "v_measure": 0.622,
        "ari": 0.468,
        "ami": 0.618,
        "silhouette": None,
    }
    lines = format_table([row]).splitlines()
    assert lines[0] == lines[-1] == "_" * 82
    assert lines[1] == "init\t\ttime\tinertia\thomo\tcompl\tv-meas\tARI\tAMI\tsilhouette"
    assert lines[2] == "PCA-based\t0.012s\t69513\t0.600\t0.647\t0.622\t0.468\t0.618\t-"


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((SERIAL_MAX_SAMPLES, 2), {1}),
        ((SERIAL_MAX_SAMPLES + 1, 2), {2}),
        ((1_000, SERIAL_MAX_CELLS // 1_000), {1}),
        ((1_000, SERIAL_MAX_CELLS // 1_000 + 1), {2}),
    ],
)
def test_small_data_is_fitted_and_scored_on_one_thread(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int], expected: set[int]
) -> None:
    # Check that a strategy on data of at most SERIAL_MAX_SAMPLES rows and
    # SERIAL_MAX_CELLS values is fitted and scored on one BLAS/OpenMP thread under a
    # worker's limit of two, and larger (or wider) data on the worker's threads: task
    # after task in a worker, two threads made a digits sweep 20-60 % slower than one
    # (only PCA's eigh was kept on one thread).
    seen: list[set[int]] = []

    def record(fn: Any) -> Any:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            seen.append({library["num_threads"] for library in threadpool_info()})
            return fn(*args, **kwargs)

        return recorded

    monkeypatch.setattr(kernel, "score_labels", record(kernel.score_labels))
    monkeypatch.setattr(kmeans_patches, "lean_kmeans", record(kmeans_patches.lean_kmeans))
    X = np.zeros(shape, dtype=np.float32)
    X[::2] = 1.0
    with threadpool_limits(2):
        kernel.fit_strategy(X, None, Strategy("random", 1), _params(2, "random", max_iter=2))
    assert seen == [expected, expected]


def test_a_stored_dataset_gets_its_pca_start_without_a_copy(tmp_path: Path) -> None:
    # Check that PCA, which wants its input writable, fits a stored dataset as it is
    # mapped (copy-on-write) instead of copying it whole; that the start is the one of
    # the data in memory; and that a write to the mapping never reaches the stored file.
    X, _ = make_blobs(n_samples=40_000, n_features=16, centers=5, random_state=3)
    X = X.astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    stored, _ = load_arrays(tmp_path / "X.npy", None)
    params = BenchmarkParams(dataset="-", n_clusters=5, strategies=(Strategy("pca", 1),))

    centers, peak = traced_peak(lambda: kernel.start_centers(stored, params.strategies[0], params))

    assert peak < X.nbytes / 4
    assert centers is not None
    assert np.array_equal(centers, kernel.start_centers(X, params.strategies[0], params))
    stored[0, 0] = 99.0
    assert np.array_equal(np.load(tmp_path / "X.npy"), X)
