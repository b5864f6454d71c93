"""The seed's benchmark, called on scikit-learn directly: what every number is checked against."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics
from sklearn.cluster import BisectingKMeans, KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

DEFAULT_N_INIT = {"k-means++": 4, "random": 4, "pca": 1}
SCORE_KEYS = ("homogeneity", "completeness", "v_measure", "ari", "ami", "silhouette")


def seed_scores(
    X: np.ndarray,
    y: np.ndarray | None,
    init: str,
    *,
    n_clusters: int,
    n_init: int | None = None,
    random_state: int = 0,
    scale: bool = True,
    algorithm: str = "lloyd",
    max_iter: int = 300,
    tol: float = 1e-4,
    silhouette_sample_size: int | None = 300,
) -> dict[str, Any]:
    """``bench_k_means`` from plot_kmeans_digits.py, with the request's parameters."""
    n_init = n_init or DEFAULT_N_INIT[init]
    common = {"n_clusters": n_clusters, "algorithm": algorithm, "max_iter": max_iter, "tol": tol}
    if init == "pca":
        # As the seed: PCA on the data as given, no random_state on this KMeans.
        pca = PCA(n_components=n_clusters).fit(X)
        kmeans = KMeans(init=pca.components_, n_init=1, **common)
    else:
        kmeans = KMeans(init=init, n_init=n_init, random_state=random_state, **common)
    estimator = make_pipeline(StandardScaler(), kmeans) if scale else kmeans
    estimator.fit(X)
    labels = kmeans.labels_
    out: dict[str, Any] = {"inertia": kmeans.inertia_, "n_iter": kmeans.n_iter_, "labels": labels}
    label_metrics = {
        "homogeneity": metrics.homogeneity_score,
        "completeness": metrics.completeness_score,
        "v_measure": metrics.v_measure_score,
        "ari": metrics.adjusted_rand_score,
        "ami": metrics.adjusted_mutual_info_score,
    }
    for name, metric in label_metrics.items():
        out[name] = None if y is None else metric(y, labels)
    out["silhouette"] = metrics.silhouette_score(
        X,
        labels,
        metric="euclidean",
        sample_size=silhouette_sample_size,
        random_state=random_state,
    )
    return out


def assert_matches(result: dict[str, Any], expected: dict[str, Any]) -> None:
    """A service result equals the direct scikit-learn computation."""
    np.testing.assert_allclose(result["inertia"], expected["inertia"], rtol=1e-9)
    assert result["n_iter"] == expected["n_iter"]
    for key in SCORE_KEYS:
        if expected[key] is None:
            assert result[key] is None, key
        else:
            np.testing.assert_allclose(result[key], expected[key], rtol=1e-9, err_msg=key)


def family_scores(
    X: np.ndarray,
    y: np.ndarray | None,
    init: str,
    *,
    n_clusters: int,
    estimator: str = "kmeans",
    centers: np.ndarray | None = None,
    n_init: int | None = None,
    random_state: int = 0,
    scale: bool = True,
    algorithm: str = "lloyd",
    max_iter: int = 300,
    tol: float = 1e-4,
    silhouette_sample_size: int | None = 300,
    score_space: str = "input",
    sample_state: int | None = None,
    options: dict[str, Any] | None = None,
    implementation: str = "sklearn",
) -> dict[str, Any]:
    """One strategy of KMeans, MiniBatchKMeans or BisectingKMeans, written out with
    scikit-learn, with every score the service reports (Davies-Bouldin and
    Calinski-Harabasz too): the internal scores on the data as given (``"input"``) or on
    the data KMeans clustered (``"clustered"``: scaled when ``scale``), the silhouette's
    sample drawn from ``sample_state`` (default ``random_state``); ``options`` are passed
    to the estimator's class as they are (e.g. ``batch_size``); ``implementation="onedal"``
    fits ``sklearnex.cluster.KMeans`` instead of scikit-learn's."""
    n_init = n_init or {**DEFAULT_N_INIT, "custom": 1}[init]
    start: Any = init
    if init == "pca":
        start = PCA(n_components=n_clusters).fit(X).components_
    elif init == "custom":
        assert centers is not None
        # The user's centres are in the data's space: the pipeline's scaler maps them.
        start = StandardScaler().fit(X).transform(centers) if scale else centers
    common: dict[str, Any] = {
        "n_clusters": n_clusters,
        "init": start,
        "n_init": n_init,
        "random_state": random_state,
        "max_iter": max_iter,
        "tol": tol,
        **(options or {}),
    }
    model: Any
    if estimator == "kmeans" and implementation == "onedal":
        from sklearnex.cluster import KMeans as OneDALKMeans

        model = OneDALKMeans(algorithm=algorithm, **common)
    elif estimator == "kmeans":
        model = KMeans(algorithm=algorithm, **common)
    elif estimator == "minibatch":
        model = MiniBatchKMeans(**common)
    else:
        model = BisectingKMeans(algorithm=algorithm, **common)
    (make_pipeline(StandardScaler(), model) if scale else model).fit(X)
    labels = model.labels_
    out: dict[str, Any] = {
        "inertia": model.inertia_,
        "n_iter": getattr(model, "n_iter_", None),
        "labels": labels,
    }
    label_metrics = {
        "homogeneity": metrics.homogeneity_score,
        "completeness": metrics.completeness_score,
        "v_measure": metrics.v_measure_score,
        "ari": metrics.adjusted_rand_score,
        "ami": metrics.adjusted_mutual_info_score,
    }
    for name, metric in label_metrics.items():
        out[name] = None if y is None else metric(y, labels)
    scored = StandardScaler().fit_transform(X) if scale and score_space == "clustered" else X
    out["silhouette"] = metrics.silhouette_score(
        scored,
        labels,
        metric="euclidean",
        sample_size=silhouette_sample_size,
        random_state=random_state if sample_state is None else sample_state,
    )
    out["davies_bouldin"] = metrics.davies_bouldin_score(scored, labels)
    out["calinski_harabasz"] = metrics.calinski_harabasz_score(scored, labels)
    return out


ALL_SCORE_KEYS = (*SCORE_KEYS, "davies_bouldin", "calinski_harabasz")


def assert_all_match(result: dict[str, Any], expected: dict[str, Any]) -> None:
    """A service result equals :func:`family_scores`, every score included."""
    np.testing.assert_allclose(result["inertia"], expected["inertia"], rtol=1e-9)
    assert result["n_iter"] == expected["n_iter"]
    for key in ALL_SCORE_KEYS:
        if expected[key] is None:
            assert result[key] is None, key
        else:
            np.testing.assert_allclose(result[key], expected[key], rtol=1e-9, err_msg=key)
