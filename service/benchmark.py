"""The reference job: scikit-learn's "K-Means on the handwritten digits" benchmark.

For each init strategy, fit ``make_pipeline(StandardScaler(), KMeans(...))`` (or
KMeans alone when ``scale`` is off), time the fit, and score the labels exactly as
``examples/cluster/plot_kmeans_digits.py`` does.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import ConfigDict

from service import __version__, blockwise, threads
from service.errors import (
    InvalidCentersError,
    InvalidDataError,
    InvalidParameterError,
    UnsupportedStrategyError,
)
from service.params import DEFAULT_ESTIMATOR as DEFAULT_ESTIMATOR
from service.params import ESTIMATORS, IMPLEMENTATIONS, FitParams, estimators_taking, fit_form
from service.tables import Preprocessing

# scikit-learn loads in the workers only: the API process checks, hashes and answers
# requests with the names and tables below (README "Performance").
if TYPE_CHECKING:
    from sklearn.cluster import BisectingKMeans, KMeans, MiniBatchKMeans
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

STRATEGIES = ("k-means++", "random", "pca", "custom")
DEFAULT_STRATEGIES = ("k-means++", "random", "pca")
DEFAULT_N_INIT = {"k-means++": 4, "random": 4, "pca": 1, "custom": 1}
# Strategies that start from explicit centres: deterministic, one run.
EXPLICIT_CENTERS = ("pca", "custom")
# The seed prints the PCA strategy under this name.
TABLE_NAMES = {"k-means++": "k-means++", "random": "random", "pca": "PCA-based"}

# The name of each estimator's scikit-learn class (sklearn.cluster), see estimator_class,
# and the init each accepts: both from the estimator table (service.params.ESTIMATORS).
ESTIMATOR_NAMES = {name: spec.cls for name, spec in ESTIMATORS.items()}
ALLOWED_STRATEGIES = {name: spec.strategies for name, spec in ESTIMATORS.items()}


def estimator_class(
    estimator: str, implementation: str = "sklearn"
) -> type[KMeans | MiniBatchKMeans | BisectingKMeans]:
    """The class of ``estimator`` (a key of :data:`ESTIMATOR_NAMES`) in ``implementation``
    (a key of :data:`service.params.IMPLEMENTATIONS`)."""
    module = importlib.import_module(IMPLEMENTATIONS[implementation][1])
    cls: type[KMeans | MiniBatchKMeans | BisectingKMeans] = getattr(
        module, ESTIMATOR_NAMES[estimator]
    )
    return cls


# Where the internal scores (silhouette, Davies-Bouldin, Calinski-Harabasz) are measured:
# on the data as given (the seed's benchmark), or in the space KMeans clustered, after
# scaling (sweeps and stability runs, which compare k and seeds: the scores on the
# unscaled data ranked k by the features' units, e.g. wine's Davies-Bouldin at k=4 was
# 20.6 there and 1.77 where KMeans worked).
ScoreSpace = Literal["input", "clustered"]

# scikit-learn's version as its installed metadata gives it (equal to sklearn.__version__).
VERSIONS = {
    "service": __version__,
    "scikit-learn": importlib.metadata.version("scikit-learn"),
    "numpy": np.__version__,
}


def versions(params: FitParams) -> dict[str, str]:
    """The versions an answer is computed with (and its id hashes): :data:`VERSIONS`, and
    the package of a non-default implementation."""
    if params.implementation == "sklearn":
        return VERSIONS
    package = IMPLEMENTATIONS[params.implementation][0]
    return {**VERSIONS, package: importlib.metadata.version(package)}


# The function of sklearn.metrics behind each score.
LABEL_METRICS = {
    "homogeneity": "homogeneity_score",
    "completeness": "completeness_score",
    "v_measure": "v_measure_score",
    "ari": "adjusted_rand_score",
    "ami": "adjusted_mutual_info_score",
}
# Scores of the clustering alone, measured where silhouette is (see ScoreSpace).
INTERNAL_METRICS = {
    "davies_bouldin": "davies_bouldin_score",
    "calinski_harabasz": "calinski_harabasz_score",
}


# Every sum of squares formed on the data (the scaler's variances, KMeans' distances and
# inertia, PCA's singular values, the plot's 2-D KMeans) is at most 32 * n_values *
# max|x|**2; a factor 2 more keeps it a margin below the dtype's largest number.
SQUARES_FACTOR = 64


def magnitude_bound(n_values: int, dtype: np.dtype[Any] | type) -> float:
    """The largest absolute value for which sums of squares over ``n_values`` values of
    ``dtype`` stay finite: about 2e149 for float64 and 2e14 for float32 at 1e8 values."""
    return float(np.sqrt(np.finfo(dtype).max / (SQUARES_FACTOR * max(n_values, 1))))


def check_magnitude(
    X: np.ndarray, *, n_values: int | None = None, name: str = "X", where: str = ""
) -> None:
    """Refuse data whose squares would overflow its floating dtype.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Floating data, finite or not.
    n_values : int, default=X.size
        How many squares are summed at most.
    name, where : str
        What ``X`` is called in the error, and in which space it is (e.g. scaled).

    Raises
    ------
    InvalidDataError
        Naming the first largest value, its row and column, and the bound.
    """
    if X.size == 0:
        return
    n_values = X.size if n_values is None else n_values
    bound = magnitude_bound(n_values, X.dtype)
    # max and min, not abs: no copy of a dataset that may be memory-mapped and large.
    high, low = float(X.max()), float(X.min())
    if max(high, -low) <= bound:
        return
    flat = int(np.argmax(X)) if high >= -low else int(np.argmin(X))
    row, col = divmod(flat, X.shape[1])
    raise InvalidDataError(
        f"{name}[{row}][{col}] is {float(X[row, col]):.6g}{where}: values must be at most "
        f"{bound:.3g} in absolute value here, or the sums of squares that KMeans forms "
        f"over {n_values} {X.dtype} values overflow; rescale the data",
        errors=[{"loc": [name, row, col], "msg": f"|value| must be at most {bound:.3g}"}],
    )


@dataclass(frozen=True)
class Strategy:
    """One init strategy; ``centers`` (n_clusters rows of n_features) for ``custom`` only,
    in the data's own feature space."""

    init: str
    n_init: int
    centers: tuple[tuple[float, ...], ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        # Without centres the form is the one before custom centres existed: same ids.
        out: dict[str, Any] = {"init": self.init, "n_init": self.n_init}
        if self.centers is not None:
            out["centers"] = [list(row) for row in self.centers]
        return out


class BenchmarkParams(FitParams):
    """A benchmark request after defaults were applied; ``dataset`` is a content id. The
    fit's fields and their defaults are :class:`service.params.FitParams`'."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str
    n_clusters: int
    strategies: tuple[Strategy, ...]
    # Default strategies that cannot run on this data or estimator (see :func:`cannot_run`),
    # left out of ``strategies`` with a warning.
    left_out: tuple[str, ...] = ()

    def as_dict(self, *, ids: bool = False) -> dict[str, Any]:
        """The stored form (with ``ids``, the hashed one: see :func:`fit_form`)."""
        params: dict[str, Any] = {
            "dataset": self.dataset,
            "n_clusters": self.n_clusters,
            "strategies": [s.as_dict() for s in self.strategies],
            **fit_form(self, ids=ids),
        }
        # Only when some were: requests made before keep their form (and their ids).
        if self.left_out:
            params["left_out"] = list(self.left_out)
        return params

    def hashed_form(self) -> dict[str, Any]:
        """:meth:`as_dict` without a default ``estimator``: requests made before there was
        a choice of estimator keep their ids (and their cached answers)."""
        return self.as_dict(ids=True)

    def warnings(self, n_samples: int, n_features: int) -> list[str]:
        """Why each strategy of ``left_out`` was left out of the defaults."""
        return [
            f"strategy {init!r} "
            f"{cannot_run(init, self.n_clusters, self.estimator, n_samples, n_features)}; "
            "left out of the default strategies"
            for init in self.left_out
        ]


def cannot_run(
    init: str, n_clusters: int, estimator: str, n_samples: int, n_features: int
) -> str | None:
    """Why strategy ``init`` cannot run at ``n_clusters`` on data of this shape with this
    estimator (a phrase following "strategy 'pca'"), or None when it can."""
    if init not in ALLOWED_STRATEGIES[estimator]:
        return f"is not an init of {ESTIMATOR_NAMES[estimator]} (estimator {estimator!r})"
    limit = min(n_samples, n_features)
    if init == "pca" and n_clusters > limit:
        return (
            f"takes n_clusters={n_clusters} principal components, but the data has only "
            f"min(n_samples, n_features)={limit}"
        )
    return None


# A fitted model's centres, and its clusters' means and deviations, are dense
# n_clusters x n_features tables: a sparse upload of a few bytes and a million columns would
# otherwise make models of hundreds of MB (measured: 1 KB of save_npz, 10 rows x 2**20
# columns, k=5, wrote 548 MB and a 180 MB model page). 2**22 values are 32 MB a table.
MAX_MODEL_VALUES = 1 << 22

# Bytes of the samples-by-centres distance block a prediction holds at once.
PREDICT_BLOCK_BYTES = 32 * 1024 * 1024


@dataclass
class FittedModel:
    """A fitted pipeline as plain arrays: enough to predict, nothing to unpickle.

    ``cluster_centers`` are in the space KMeans worked in (scaled when ``scaler_mean``
    is set); :meth:`centers_in_feature_space` maps them back.
    """

    init: str
    n_clusters: int
    n_features: int
    cluster_centers: np.ndarray
    scaler_mean: np.ndarray | None
    scaler_scale: np.ndarray | None
    inertia: float
    # None for BisectingKMeans, which runs one KMeans per bisection and counts none.
    n_iter: int | None
    estimator: str = DEFAULT_ESTIMATOR
    # The training rows per cluster (by the fit's labels): counts (n_clusters,), and
    # means and standard deviations (n_clusters, n_features) in the data's own units.
    # None in models stored before they were kept.
    cluster_sizes: np.ndarray | None = None
    cluster_means: np.ndarray | None = None
    cluster_stds: np.ndarray | None = None
    # The training rows' distances to their own centre, sorted, from the median on:
    # every (1 - contamination) quantile with contamination < 0.5 reads only these.
    distance_tail: np.ndarray | None = None
    n_train: int = 0
    # The names of X's columns; None when the data had none (then x0, x1, ...).
    feature_names: tuple[str, ...] | None = None
    # A Normalizer after the scaler (normalize="l2"), and a table's fitted imputation and
    # one-hot encoding before both (service.tables), so that raw rows can be predicted.
    normalize: bool = False
    preprocessing: Preprocessing | None = None

    def rows(self, X: Any) -> np.ndarray:
        """A request's rows as the matrix :meth:`predict` takes: through the model's
        preprocessing (raw cells, strings and nulls) when it has one, else numbers."""
        from service.datasets import as_feature_matrix

        if self.preprocessing is not None:
            return self.preprocessing.transform_rows(X)
        return as_feature_matrix(X, min_samples=1)

    @property
    def nbytes(self) -> int:
        """About how much memory the model holds."""
        arrays = (self.cluster_centers, self.cluster_means, self.cluster_stds, self.distance_tail)
        return 512 + sum(a.nbytes for a in arrays if a is not None)

    def feature_labels(self) -> list[str]:
        """The features' names: the data's columns, else ``x0, x1, ...`` as scikit-learn
        names them."""
        if self.feature_names is not None:
            return list(self.feature_names)
        return [f"x{i}" for i in range(self.n_features)]

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Assign samples to clusters as the fitted pipeline's ``predict`` does.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Validated, finite data in the original feature space.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Index of the nearest centre.
        distances : ndarray of shape (n_samples,)
            Euclidean distance to that centre, in the space KMeans worked in (scaled when
            the pipeline scales), as ``KMeans.transform`` measures it.
        """
        if X.shape[1] != self.n_features:
            raise InvalidDataError(
                f"X has {X.shape[1]} features but the model was fitted on {self.n_features}",
                errors=[{"loc": ["X"], "msg": f"expected {self.n_features} features"}],
            )
        Z = np.asarray(X, dtype=np.float64)
        where = ""
        if self.scaler_mean is not None and self.scaler_scale is not None:
            with np.errstate(over="ignore"):  # an overflow is refused just below
                Z = (Z - self.scaler_mean) / self.scaler_scale
            where = " after the model's StandardScaler"
        if self.normalize:
            norms = np.sqrt(np.einsum("ij,ij->i", Z, Z))
            norms[norms == 0.0] = 1.0
            Z = Z / norms[:, None]
        # Squares are summed per sample here: a sample too far out has no finite distance.
        check_magnitude(Z, n_values=self.n_features, where=where)
        centers = self.cluster_centers
        centers_squared = (centers * centers).sum(axis=1)
        labels = np.empty(Z.shape[0], dtype=np.intp)
        # Row blocks keep the samples-by-centres matrix within a fixed budget, whatever
        # the request (whole, a 1 MB body against K=2000 took the server down for memory).
        block = max(1, PREDICT_BLOCK_BYTES // (8 * len(centers)))
        for start in range(0, Z.shape[0], block):
            Zb = Z[start : start + block]
            squared = (Zb * Zb).sum(axis=1)[:, None] - 2.0 * Zb @ centers.T + centers_squared
            labels[start : start + block] = squared.argmin(axis=1)
        # The expansion can dip below zero by rounding: recompute the winner exactly.
        distances = np.sqrt(((Z - centers[labels]) ** 2).sum(axis=1))
        return labels, distances

    def threshold(self, contamination: float) -> float:
        """The (1 - ``contamination``) quantile of the training rows' distances to their
        own centre, as ``numpy.quantile`` computes it on all of them.

        Raises
        ------
        InvalidParameterError
            The model predates the distances kept for this (``distance_tail`` is None).
        """
        if self.distance_tail is None:
            raise InvalidParameterError(
                "this model was stored by an earlier version of the service, without the "
                "training rows' distances that anomaly detection needs",
                errors=[{"loc": ["model_id"], "msg": "no training distances"}],
            )
        head = self.n_train - len(self.distance_tail)
        # The rows below the tail are never read by a quantile above the median: stand-ins
        # equal to its least value keep the order statistics numpy.quantile reads.
        distances = np.concatenate([np.full(head, self.distance_tail[0]), self.distance_tail])
        return float(np.quantile(distances, 1.0 - contamination))

    def profiles(self) -> list[dict[str, Any]] | None:
        """Each cluster's ``label``, ``size``, and per-feature ``mean`` and ``std`` keyed
        by feature name (NaN as None); None for a model stored before they were kept."""
        if self.cluster_sizes is None or self.cluster_means is None or self.cluster_stds is None:
            return None
        names = self.feature_labels()

        def per_feature(values: np.ndarray) -> dict[str, float | None]:
            pairs = zip(names, values.tolist(), strict=True)
            return {name: None if math.isnan(v) else v for name, v in pairs}

        return [
            {"label": label, "size": size, "mean": per_feature(mean), "std": per_feature(std)}
            for label, (size, mean, std) in enumerate(
                zip(self.cluster_sizes.tolist(), self.cluster_means, self.cluster_stds, strict=True)
            )
        ]

    def centers_in_feature_space(self) -> np.ndarray:
        if self.scaler_mean is None or self.scaler_scale is None:
            return self.cluster_centers
        centers: np.ndarray = self.cluster_centers * self.scaler_scale + self.scaler_mean
        return centers


@dataclass
class StrategyOutcome:
    """One strategy's fit: its timing, scores and the fitted model."""

    init: str
    n_init: int
    fit_time: float
    inertia: float
    n_iter: int | None
    scores: dict[str, float | None]
    model: FittedModel
    warnings: list[str] = field(default_factory=list)


def canonical_json(value: Any) -> bytes:
    """Key-sorted, whitespace-free JSON: the form that is hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def benchmark_id(params: BenchmarkParams) -> str:
    """The request hash: params after defaults, dataset by content, versions salted in."""
    return hashlib.sha256(
        canonical_json({"benchmark": params.hashed_form(), "versions": versions(params)})
    ).hexdigest()


def model_id(params: BenchmarkParams, strategy: Strategy) -> str:
    """A model's hash: only what changes the fit, so benchmarks share equal models."""
    # The fit's fields as the model form has them (a later field only when not its
    # default, so the models of default requests keep their ids).
    key: dict[str, Any] = {
        "dataset": params.dataset,
        "n_clusters": params.n_clusters,
        "init": strategy.init,
        "n_init": strategy.n_init,
        **fit_form(params, ids=True, fit_only=True),
    }
    if strategy.centers is not None:
        key["centers"] = [list(row) for row in strategy.centers]
    return hashlib.sha256(canonical_json({"model": key, "versions": versions(params)})).hexdigest()


def check_params(params: BenchmarkParams, n_samples: int, n_features: int) -> None:
    """Reject parameters that the data cannot satisfy, before any work is queued.

    Raises
    ------
    InvalidParameterError
        ``n_clusters`` > n_samples, ``pca`` with ``n_clusters`` >
        min(n_samples, n_features), or ``algorithm`` for an estimator without one.
    UnsupportedStrategyError
        A strategy the estimator does not take (e.g. ``pca`` with ``bisecting``).
    InvalidCentersError
        Custom centres whose shape is not (n_clusters, n_features), or not finite.
    """
    if params.n_clusters > n_samples:
        raise InvalidParameterError(
            f"n_clusters={params.n_clusters} is larger than n_samples={n_samples}",
            errors=[{"loc": ["n_clusters"], "msg": f"must be <= n_samples ({n_samples})"}],
        )
    if params.n_clusters * n_features > MAX_MODEL_VALUES:
        raise InvalidParameterError(
            f"n_clusters={params.n_clusters} x n_features={n_features} is "
            f"{params.n_clusters * n_features:,} values per centre table, past the "
            f"{MAX_MODEL_VALUES:,} a model may hold (its centres and cluster profiles are "
            "dense, even for sparse data): ask for fewer clusters or fewer features",
            errors=[
                {"loc": ["n_clusters"], "msg": f"n_clusters x n_features <= {MAX_MODEL_VALUES}"}
            ],
        )
    check_estimator(params.estimator, params.strategies)
    check_estimator_params(params)
    limit = min(n_samples, n_features)
    for i, strategy in enumerate(params.strategies):
        reason = cannot_run(
            strategy.init, params.n_clusters, params.estimator, n_samples, n_features
        )
        if strategy.init == "pca" and reason is not None:
            raise InvalidParameterError(
                f"strategy 'pca' {reason}",
                errors=[
                    {
                        "loc": ["strategies", i],
                        "msg": f"pca needs n_clusters <= min(n_samples, n_features) = {limit}",
                    }
                ],
            )
        if strategy.init == "custom":
            check_centers(strategy.centers, i, params.n_clusters, n_features)


def check_estimator(estimator: str, strategies: tuple[Strategy, ...]) -> None:
    """Refuse the (estimator, strategy) pairs scikit-learn does not take, naming the pair."""
    allowed = ALLOWED_STRATEGIES[estimator]
    for i, strategy in enumerate(strategies):
        if strategy.init not in allowed:
            name = ESTIMATOR_NAMES[estimator]
            raise UnsupportedStrategyError(
                f"estimator {estimator!r} ({name}) does not take strategy {strategy.init!r}: "
                f"its init is one of {', '.join(repr(s) for s in sorted(allowed))}",
                errors=[
                    {
                        "loc": ["strategies", i],
                        "msg": f"{strategy.init!r} is not an init of {name}",
                    }
                ],
            )


def check_estimator_params(params: FitParams) -> None:
    """Refuse a field the estimator is not passed (:data:`service.params.ESTIMATORS`) set
    to other than its default, naming the field and the estimators that take it, and an
    implementation the estimator has not or this server has not installed."""
    spec = ESTIMATORS[params.estimator]
    implementation = params.implementation
    if implementation not in spec.implementations:
        takers = [name for name, e in ESTIMATORS.items() if implementation in e.implementations]
        raise InvalidParameterError(
            f"implementation {implementation!r} has no {spec.cls}: it runs estimator "
            f"{' and '.join(map(repr, takers))} only",
            errors=[{"loc": ["implementation"], "msg": f"no {spec.cls} in {implementation}"}],
        )
    package = IMPLEMENTATIONS[implementation][0]
    try:
        importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise InvalidParameterError(
            f"implementation {implementation!r} needs the package {package}, which this "
            "server has not installed (pip install 'clusterbench[onedal]')",
            errors=[{"loc": ["implementation"], "msg": f"{package} is not installed here"}],
        ) from None
    for name, info in type(params).model_fields.items():
        takers = estimators_taking(name)
        value = getattr(params, name)
        if not takers or name in spec.params or value == info.default:
            continue
        estimator = params.estimator
        raise InvalidParameterError(
            f"estimator {estimator!r} ({spec.cls}) has no {name} parameter: "
            f"{name}={value!r} applies to {' and '.join(map(repr, takers))} only",
            errors=[{"loc": [name], "msg": f"{spec.cls} has no {name}; leave it {info.default!r}"}],
        )


def default_n_clusters(n_clusters: int | None, n_labels: int | None) -> int:
    """``n_clusters`` as asked, or by default the number of distinct labels.

    Raises
    ------
    InvalidParameterError
        Neither is there, or the labels hold a single class.
    """
    if n_clusters is not None:
        return n_clusters
    if n_labels is None:
        raise InvalidParameterError(
            "n_clusters is required: the data has no labels to count clusters from",
            errors=[{"loc": ["n_clusters"], "msg": "required when the data has no labels"}],
        )
    if n_labels < 2:
        raise InvalidParameterError(
            "the labels hold a single class, so n_clusters cannot default to it; "
            "give n_clusters >= 2",
            errors=[{"loc": ["n_clusters"], "msg": "required: labels have one class"}],
        )
    return n_labels


def check_centers(
    centers: Sequence[Sequence[float]] | None, index: int, n_clusters: int, n_features: int
) -> None:
    """Custom centres: ``n_clusters`` rows of ``n_features`` finite numbers.

    Raises
    ------
    InvalidCentersError
        Naming the strategy, and the row or value at fault.
    """
    where = f"strategies[{index}].centers"
    loc: list[Any] = ["strategies", index, "centers"]
    if centers is None:
        raise InvalidCentersError(
            f"{where}: strategy 'custom' needs centers, {n_clusters} rows of {n_features} values",
            errors=[{"loc": loc, "msg": "required for init 'custom'"}],
        )
    if len(centers) != n_clusters:
        raise InvalidCentersError(
            f"{where}: expected {n_clusters} rows (n_clusters), got {len(centers)}",
            errors=[{"loc": loc, "msg": f"expected {n_clusters} rows, got {len(centers)}"}],
        )
    for row, values in enumerate(centers):
        if len(values) != n_features:
            raise InvalidCentersError(
                f"{where}[{row}]: expected {n_features} values (n_features), got {len(values)}",
                errors=[
                    {
                        "loc": [*loc, row],
                        "msg": f"expected {n_features} values, got {len(values)}",
                    }
                ],
            )
    # As for the data: squares of the centres must not overflow KMeans' sums.
    bound = magnitude_bound(n_clusters * n_features, np.float64)
    array = np.asarray(centers, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(array) | (np.abs(array) > bound)
    if bad.any():
        row, col = divmod(int(np.argmax(bad)), n_features)
        value = float(array[row, col])
        if np.isfinite(value):
            detail = f"values must be at most {bound:.3g} in absolute value, or KMeans' sums "
            detail += "of squares overflow"
            msg = f"|value| must be <= {bound:.3g}"
        else:
            detail, msg = "centres must be finite numbers", "must be finite"
        raise InvalidCentersError(
            f"{where}[{row}][{col}] is {value:.6g}: {detail}",
            errors=[{"loc": [*loc, row, col], "msg": msg}],
        )


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
        with threads.serial_when_small(X.shape[0]):
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
    """
    from sklearn.pipeline import Pipeline

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kmeans = make_kmeans(X, strategy, params)
        t0 = time.perf_counter()
        estimator, fitted_on = _fit_steps(X, params)
        fit_kwargs = {} if sample_weight is None else {"sample_weight": sample_weight}
        with blockwise.lean_tolerance():
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


TABLE_RULE = 82 * "_"
TABLE_HEADER = "init\t\ttime\tinertia\thomo\tcompl\tv-meas\tARI\tAMI\tsilhouette"


def format_table(results: list[dict[str, Any]], estimator: str = DEFAULT_ESTIMATOR) -> str:
    """The benchmark as the seed prints it; a missing score prints as ``-``.

    Another estimator than KMeans is named on a line above the table.
    """
    lines = [TABLE_RULE, TABLE_HEADER]
    if estimator != DEFAULT_ESTIMATOR:
        lines.insert(0, f"estimator: {estimator} ({ESTIMATOR_NAMES[estimator]})")
    for r in results:
        scores = [
            "-" if r[k] is None else f"{r[k]:.3f}"
            for k in ("homogeneity", "completeness", "v_measure", "ari", "ami", "silhouette")
        ]
        name = TABLE_NAMES.get(r["init"], r["init"])
        lines.append(
            "\t".join([f"{name:9s}", f"{r['fit_time']:.3f}s", f"{r['inertia']:.0f}", *scores])
        )
    lines.append(TABLE_RULE)
    return "\n".join(lines) + "\n"
