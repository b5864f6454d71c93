"""A benchmark's question: its strategies and parameters after defaults, the checks
made before any work, and the ids (request and model hashes) that key its answers.

Read in the API process: nothing here imports scikit-learn.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import ConfigDict

from service import __version__
from service.datasets import DatasetInfo
from service.errors import (
    InvalidCentersError,
    InvalidDataError,
    InvalidParameterError,
    UnsupportedStrategyError,
)
from service.params import DEFAULT_ESTIMATOR as DEFAULT_ESTIMATOR
from service.params import (
    ESTIMATORS,
    IMPLEMENTATIONS,
    FitParams,
    StrategyName,
    StrategySpec,
    estimators_taking,
    fit_form,
)

# scikit-learn loads in the workers only: the API process checks, hashes and answers
# requests with the names and tables below (README "Performance").
if TYPE_CHECKING:
    from sklearn.cluster import BisectingKMeans, KMeans, MiniBatchKMeans


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


def strategies_of(items: list[StrategyName | StrategySpec]) -> tuple[Strategy, ...]:
    """The request's strategies with their defaults applied."""
    return tuple(
        Strategy(init=s, n_init=DEFAULT_N_INIT[s])
        if isinstance(s, str)
        else Strategy(
            init=s.init,
            n_init=s.n_init or DEFAULT_N_INIT[s.init],
            # + 0.0: -0.0 starts KMeans where 0.0 does, and must hash the same.
            centers=None
            if s.centers is None
            else tuple(tuple(v + 0.0 for v in row) for row in s.centers),
        )
        for s in items
    )


@dataclass(frozen=True)
class ResolvedBenchmark:
    """A benchmark request after defaults: its id, the dataset it names (resolved) and
    its parameters. What is computed, stored and answered under ``id``."""

    id: str
    dataset: DatasetInfo
    params: BenchmarkParams
