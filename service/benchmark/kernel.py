"""The reference job's computation: for each init strategy, fit
``make_pipeline(StandardScaler(), KMeans(...))`` (or KMeans alone when ``scale`` is
off), time the fit, and score the labels exactly as
``examples/cluster/plot_kmeans_digits.py`` does. Arrays in, arrays out; scikit-learn is
imported in the functions, which run in the workers.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from service import blockwise, kmeans_patches, threads

# scikit-learn loads in the workers only: the API process checks, hashes and answers
# requests with the names and tables below (README "Performance").
from service.benchmark.model import FittedModel, StrategyOutcome
from service.benchmark.spec import (
    INTERNAL_METRICS,
    LABEL_METRICS,
    BenchmarkParams,
    ScoreSpace,
    Strategy,
    check_magnitude,
    estimator_class,
)
from service.errors import (
    InvalidDataError,
    InvalidParameterError,
)
from service.params import DEFAULT_ESTIMATOR as DEFAULT_ESTIMATOR
from service.params import ESTIMATORS
from service.tables import Preprocessing

if TYPE_CHECKING:
    from sklearn.cluster import BisectingKMeans, KMeans, MiniBatchKMeans
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler


def start_centers(X: np.ndarray, strategy: Strategy, params: BenchmarkParams) -> np.ndarray | None:
    """The explicit initial centres of ``pca`` and ``custom``, else None.

    ``pca`` is fitted on ``X`` as given, as the seed does. ``custom`` centres are in the
    data's feature space: they go through the steps the pipeline fits before KMeans
    (StandardScaler, Normalizer), so that they mean what the user wrote.
    """
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline

    if strategy.init == "pca":
        # PCA takes sparse data with the ARPACK solver only (it centres implicitly),
        # which finds fewer components than min(n_samples, n_features).
        solver = "arpack" if blockwise.is_sparse(X) else "auto"
        if solver == "arpack" and params.n_clusters >= min(X.shape):
            raise InvalidParameterError(
                f"strategy 'pca' on sparse data takes n_clusters={params.n_clusters} "
                "components from ARPACK, which finds fewer than min(n_samples, n_features)"
                f"={min(X.shape)}: ask for fewer clusters or another strategy",
                errors=[{"loc": ["n_clusters"], "msg": "too many components for ARPACK"}],
            )
        pca = PCA(
            n_components=params.n_clusters,
            svd_solver=solver,
            random_state=params.random_state if solver == "arpack" else None,
        ).fit(X)
        components: np.ndarray = pca.components_
        return components
    if strategy.init == "custom" and strategy.centers is not None:
        centers = np.asarray(strategy.centers, dtype=np.float64)
        steps = preprocessing_steps(params, blockwise.is_sparse(X))
        if steps:
            moved: np.ndarray = make_pipeline(*steps).fit(X).transform(centers)
            return moved
        return centers
    return None


def preprocessing_steps(
    params: BenchmarkParams, sparse: bool = False
) -> list[StandardScaler | Normalizer]:
    """The steps before the estimator: the StandardScaler (``scale``; without centring on
    ``sparse`` data, which centring would make dense), then a Normalizer
    (``normalize="l2"``)."""
    from sklearn.preprocessing import Normalizer, StandardScaler

    steps: list[StandardScaler | Normalizer] = []
    if params.scale:
        steps.append(StandardScaler(with_mean=not sparse))
    if params.normalize == "l2":
        steps.append(Normalizer())
    return steps


def make_kmeans(
    X: np.ndarray, strategy: Strategy, params: BenchmarkParams
) -> KMeans | MiniBatchKMeans | BisectingKMeans:
    """The estimator for one strategy (``pca`` and ``custom`` starts are computed here)."""
    explicit = start_centers(X, strategy, params)
    init: str | np.ndarray = strategy.init if explicit is None else explicit
    spec = ESTIMATORS[params.estimator]
    kwargs: dict[str, Any] = {
        "n_clusters": params.n_clusters,
        "init": init,
        "n_init": strategy.n_init,
        "max_iter": params.max_iter,
        "tol": params.tol,
        "random_state": params.random_state,
        # The fields the estimator table passes to this estimator (e.g. `algorithm`).
        **{name: getattr(params, name) for name in spec.params},
    }
    if spec.copy_x:
        # Behind the scaler KMeans gets a fresh array of its own: centring it in place
        # instead of on a copy gives the same clustering with one copy of X fewer.
        # Sparse data KMeans never centres, so never needs a copy.
        kwargs["copy_x"] = not params.scale and not blockwise.is_sparse(X)
    return estimator_class(params.estimator, params.implementation)(**kwargs)


def run_benchmark(
    X: np.ndarray, y: np.ndarray | None, params: BenchmarkParams
) -> list[StrategyOutcome]:
    """Fit and score every strategy of ``params`` on ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Validated, finite data.
    y : ndarray of shape (n_samples,) or None
        Ground-truth labels; without them the label scores are None.
    params : BenchmarkParams
        Already checked against the data's shape (:func:`check_params`).

    Returns
    -------
    outcomes : list of StrategyOutcome
        In the order of ``params.strategies``.

    Raises
    ------
    InvalidDataError
        Values so large that KMeans' sums of squares would overflow, or (never seen)
        a non-finite number in scikit-learn's results.
    """
    check_magnitude(X)
    return [_run_strategy(X, y, strategy, params) for strategy in params.strategies]


def _run_strategy(
    X: np.ndarray, y: np.ndarray | None, strategy: Strategy, params: BenchmarkParams
) -> StrategyOutcome:
    return fit_strategy(X, y, strategy, params)[0]


def _fit_steps(X: np.ndarray, params: BenchmarkParams) -> tuple[Pipeline | None, np.ndarray]:
    """The fitted steps before the estimator (a Pipeline still without it, None when
    there are none) and the matrix the estimator is fitted on.

    As ``make_pipeline(*preprocessing_steps(params), kmeans).fit(X)`` computes it, with
    one copy of ``X`` instead of up to four (README "Performance"): dense data is scaled
    block-wise into the one copy (:func:`blockwise.fit_scaler`), sparse data's values
    only (:func:`blockwise.scale_sparse_columns`), a Normalizer works on it in place,
    and KMeans centres it in place (``copy_x=False``, see make_kmeans).
    """
    from scipy import sparse
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer

    if sparse.issparse(X):
        return _fit_sparse_steps(X, params)
    steps = preprocessing_steps(params)
    if not steps:
        return None, X
    if not params.scale:
        pipeline = Pipeline([(type(s).__name__.lower(), s) for s in steps])
        return pipeline, pipeline.fit_transform(X)
    Z, scaler = blockwise.fit_scaler(X)
    # The stored data's pages are read again only after the fit (scores, profiles).
    blockwise.release_pages(X)
    fitted: list[tuple[str, Any]] = [("standardscaler", scaler)]
    if params.normalize == "l2":
        normalizer = Normalizer().fit(Z)
        Z = normalizer.transform(Z, copy=False)
        fitted.append(("normalizer", normalizer))
    return Pipeline(fitted), Z


def _fit_sparse_steps(X: Any, params: BenchmarkParams) -> tuple[Pipeline | None, Any]:
    """:func:`_fit_steps` of CSR data: the StandardScaler (without centring) fitted as
    scikit-learn fits it, its transform made as a copy of the values alone, and the
    Normalizer applied to that copy in place."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer
    from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l2

    fitted: list[tuple[str, Any]] = []
    Z = X
    for step in preprocessing_steps(params, sparse=True):
        step.fit(Z)
        if isinstance(step, Normalizer):
            Z = Z if Z is not X else blockwise.with_values(X, X.data.copy())
            inplace_csr_row_normalize_l2(Z)  # Normalizer's transform, on the copy
        else:
            Z = blockwise.scale_sparse_columns(X, 1 / step.scale_)
        fitted.append((type(step).__name__.lower(), step))
    return (Pipeline(fitted) if fitted else None), Z


def fit_strategy(
    X: np.ndarray,
    y: np.ndarray | None,
    strategy: Strategy,
    params: BenchmarkParams,
    *,
    score_space: ScoreSpace = "input",
    sample_state: int | None = None,
    sample_weight: np.ndarray | None = None,
    preprocessing: Preprocessing | None = None,
) -> tuple[StrategyOutcome, np.ndarray]:
    """One strategy's fit and scores, and its labels (n_samples,), which the benchmark's
    outcome leaves out (they would travel back from the worker for nothing).

    ``X`` is the data as given: a table's after imputation and one-hot encoding
    (``preprocessing``, kept with the model so that it predicts raw rows).
    ``sample_weight`` weighs the estimator's fit only, as
    ``pipeline.fit(X, kmeans__sample_weight=w)`` does.

    The internal scores are measured in ``score_space``; the silhouette's sample is drawn
    from ``sample_state`` (default ``params.random_state``): a stability run draws the
    same sample for every seed.

    Small data (:func:`~service.threads.serial_when_small`) is fitted and scored on one
    thread, whatever the worker's limit.
    """
    from sklearn.pipeline import Pipeline

    with threads.serial_when_small(X.shape), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kmeans = make_kmeans(X, strategy, params)
        t0 = time.perf_counter()
        estimator, fitted_on = _fit_steps(X, params)
        fit_kwargs = {} if sample_weight is None else {"sample_weight": sample_weight}
        with kmeans_patches.lean_kmeans():
            kmeans.fit(fitted_on, **fit_kwargs)
        fit_time = time.perf_counter() - t0
        del fitted_on  # KMeans keeps no reference: the scaled copy goes here
        if estimator is not None:
            estimator.steps.append((type(kmeans).__name__.lower(), kmeans))
        labels = kmeans.labels_
        scored = X
        if score_space == "clustered" and estimator is not None:
            # Every step before KMeans, fitted: the points KMeans assigned.
            scored = estimator[:-1].transform(X)
        scores = score_labels(
            scored,
            y,
            labels,
            params.silhouette_sample_size,
            params.random_state if sample_state is None else sample_state,
        )
        del scored
    scaler = estimator[0] if params.scale and isinstance(estimator, Pipeline) else None
    n_iter = getattr(kmeans, "n_iter_", None)
    # Data past the magnitude bound overflows here too; _check_finite_results below
    # refuses such a fit by its inertia, so the overflow is not a warning of its own.
    with np.errstate(over="ignore", invalid="ignore"):
        sizes, means, stds = blockwise.profile_clusters(X, labels, params.n_clusters)
        own = blockwise.distances_to_centers(
            X,
            labels,
            kmeans.cluster_centers_,
            np.asarray if estimator is None else estimator[:-1].transform,
        )
    model = FittedModel(
        init=strategy.init,
        n_clusters=params.n_clusters,
        n_features=int(X.shape[1]),
        cluster_centers=np.asarray(kmeans.cluster_centers_),
        # Without centring (sparse data) the scaler subtracts nothing.
        scaler_mean=(
            None
            if scaler is None
            else np.asarray(scaler.mean_)
            if scaler.with_mean
            else np.zeros(X.shape[1])
        ),
        scaler_scale=None if scaler is None else np.asarray(scaler.scale_),
        inertia=float(kmeans.inertia_),
        n_iter=None if n_iter is None else int(n_iter),
        estimator=params.estimator,
        cluster_sizes=sizes,
        cluster_means=means,
        cluster_stds=stds,
        distance_tail=np.sort(own)[(len(own) - 1) // 2 :],
        n_train=len(own),
        normalize=params.normalize == "l2",
        preprocessing=preprocessing,
        feature_names=None if preprocessing is None else tuple(preprocessing.design_names()),
    )
    _check_finite_results(strategy, model, scores)
    outcome = StrategyOutcome(
        init=strategy.init,
        n_init=strategy.n_init,
        fit_time=fit_time,
        inertia=model.inertia,
        n_iter=model.n_iter,
        scores=scores,
        model=model,
        warnings=list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught)),
    )
    return outcome, np.asarray(labels)


def score_labels(
    X: np.ndarray,
    y: np.ndarray | None,
    labels: np.ndarray,
    silhouette_sample_size: int | None,
    random_state: int,
) -> dict[str, float | None]:
    """Every score of a clustering, as the seed computes them.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        The data the internal scores are measured on: as given (a benchmark), or as
        KMeans clustered it (see :data:`ScoreSpace`).
    y : ndarray of shape (n_samples,) or None
        Ground truth; without it the label scores are None.
    labels : ndarray of shape (n_samples,)
        The clustering.
    silhouette_sample_size, random_state
        The silhouette's sample, as ``metrics.silhouette_score`` takes them.

    Returns
    -------
    scores : dict
        The label scores, ``silhouette``, ``davies_bouldin`` and ``calinski_harabasz``;
        an internal score is None (with a warning) where it is undefined.
    """
    from sklearn import metrics

    scores: dict[str, float | None] = {
        name: (None if y is None else float(getattr(metrics, metric)(y, labels)))
        for name, metric in LABEL_METRICS.items()
    }
    n_found = np.unique(labels).size
    defined = 2 <= n_found <= X.shape[0] - 1
    if not defined:
        warnings.warn(
            f"silhouette is undefined for {n_found} distinct cluster(s) on {X.shape[0]} "
            "samples (so are davies_bouldin and calinski_harabasz); reported as null",
            UserWarning,
            stacklevel=2,
        )
    scores["silhouette"] = (
        _silhouette(X, labels, silhouette_sample_size, random_state) if defined else None
    )
    # Its input check read every stored value of sparse X: given back before the passes
    # that follow, which hold a block of them at a time.
    blockwise.release_rows(X, 0, X.shape[0])
    for name, metric in INTERNAL_METRICS.items():
        # The same number as scikit-learn's, without its float64 copy of the data.
        score = getattr(blockwise, metric, None) or getattr(metrics, metric)
        scores[name] = _internal_score(name, score, X, labels) if defined else None
    return scores


def _internal_score(
    name: str, metric: Callable[[np.ndarray, np.ndarray], float], X: np.ndarray, labels: np.ndarray
) -> float | None:
    try:
        return float(metric(X, labels))
    except ValueError as exc:  # only data past check_magnitude's bound (distances overflow)
        warnings.warn(f"{name} not computed: {exc}", UserWarning, stacklevel=2)
        return None


def _check_finite_results(
    strategy: Strategy, model: FittedModel, scores: dict[str, float | None]
) -> None:
    # JSON has no infinity or NaN (orjson writes null): a number the service returns is
    # finite, or the request is refused. check_magnitude should make this unreachable.
    numbers = {
        "inertia": [model.inertia],
        "cluster_centers": model.cluster_centers,
        "scaler mean": [] if model.scaler_mean is None else model.scaler_mean,
        "scaler scale": [] if model.scaler_scale is None else model.scaler_scale,
        **{name: [value] for name, value in scores.items() if value is not None},
    }
    for what, values in numbers.items():
        if not np.all(np.isfinite(np.asarray(values, dtype=np.float64))):
            raise InvalidDataError(
                f"strategy {strategy.init!r}: scikit-learn computed a non-finite {what} "
                "on this data (values too large or too spread out); rescale the data",
                errors=[{"loc": ["X"], "msg": f"non-finite {what}"}],
            )


def _silhouette(
    X: np.ndarray, labels: np.ndarray, sample_size: int | None, random_state: int
) -> float | None:
    from sklearn import metrics

    try:
        return float(
            metrics.silhouette_score(
                X,
                labels,
                metric="euclidean",
                sample_size=sample_size,
                random_state=random_state,
            )
        )
    except ValueError as exc:  # the sample drew fewer than 2 clusters
        warnings.warn(f"silhouette not computed: {exc}", UserWarning, stacklevel=2)
        return None
