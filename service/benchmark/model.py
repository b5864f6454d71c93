"""A fitted strategy as plain arrays (:class:`FittedModel`: enough to predict, nothing
to unpickle) and its outcome (:class:`StrategyOutcome`: timing, scores, the model)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

# scikit-learn loads in the workers only: the API process checks, hashes and answers
# requests with the names and tables below (README "Performance").
from service.benchmark.spec import check_magnitude
from service.errors import (
    InvalidDataError,
    InvalidParameterError,
)
from service.params import DEFAULT_ESTIMATOR as DEFAULT_ESTIMATOR
from service.tables import Preprocessing

if TYPE_CHECKING:
    pass

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
