"""KMeans' parameters, each declared once: its default, constraint and description.

The benchmark, sweep and stability requests inherit these fields (service.schemas), the
resolved parameters the compute path reads inherit them too (service.benchmark,
service.sweeps), the responses echo them, and the client and the CLI take them from the
requests. The ids hash the forms :func:`fit_form` derives from them, so that no field is
listed by hand anywhere else.

The estimator table (:data:`ESTIMATORS`) says, as data, which scikit-learn class each
estimator is, which init strategies it takes and which of these fields it is passed: a new
parameter of one estimator is one field here and one name in its row (scikit-learn's
``_parameter_constraints`` idea).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from service.tables import DEFAULT_MISSING, DEFAULT_NORMALIZE, Missing, Normalize

StrategyName = Literal["k-means++", "random", "pca", "custom"]
EstimatorName = Literal["kmeans", "minibatch", "bisecting"]
ImplementationName = Literal["sklearn", "onedal"]

# Each implementation: the distribution that provides it (its version is part of the
# answer and of the ids) and the module its estimator classes are in. oneDAL's K-Means
# (Intel's scikit-learn-intelex, the `onedal` extra) measured 2.6-5x faster here for
# k-means++ at 200k x 64 and 1M x 32; its numbers are its own, not scikit-learn's.
IMPLEMENTATIONS: dict[str, tuple[str, str]] = {
    "sklearn": ("scikit-learn", "sklearn.cluster"),
    "onedal": ("scikit-learn-intelex", "sklearnex.cluster"),
}


@dataclass(frozen=True)
class EstimatorSpec:
    """One estimator: its class in sklearn.cluster, the strategies it takes as init, the
    fields of :class:`FitParams` it is passed by name, whether it takes ``copy_x``
    (centred in place behind the scaler, one copy of X fewer), and the implementations
    (:data:`IMPLEMENTATIONS`) that have it."""

    cls: str
    strategies: frozenset[str]
    params: tuple[str, ...]
    copy_x: bool
    implementations: tuple[str, ...] = ("sklearn",)


ALL_STRATEGIES = frozenset({"k-means++", "random", "pca", "custom"})
# BisectingKMeans takes only a name ("k-means++" or "random") as init, never an array of
# centres, so neither pca nor custom centres; MiniBatchKMeans has no `algorithm`.
ESTIMATORS: dict[str, EstimatorSpec] = {
    "kmeans": EstimatorSpec(
        "KMeans",
        ALL_STRATEGIES,
        ("algorithm",),
        copy_x=True,
        implementations=tuple(IMPLEMENTATIONS),
    ),
    "minibatch": EstimatorSpec("MiniBatchKMeans", ALL_STRATEGIES, ("batch_size",), copy_x=False),
    "bisecting": EstimatorSpec(
        "BisectingKMeans",
        frozenset({"k-means++", "random"}),
        ("algorithm", "bisecting_strategy"),
        copy_x=True,
    ),
}
DEFAULT_ESTIMATOR = "kmeans"


def estimators_taking(field: str) -> list[str]:
    """The estimators that are passed ``field``, in the table's order."""
    return [name for name, spec in ESTIMATORS.items() if field in spec.params]


class StrategySpec(BaseModel):
    """One init strategy, optionally with its own ``n_init``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    init: StrategyName = Field(description="The init strategy.", examples=["k-means++"])
    n_init: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Number of KMeans runs with different seeds; default 4 (1 for `pca` and "
        "`custom`, which start from fixed centres and take only 1).",
        examples=[4],
    )
    centers: list[list[float]] | None = Field(
        None,
        description="For `custom` only: the initial centres, n_clusters rows of n_features "
        "numbers in the data's own feature space (scaled with the data when `scale` is true).",
        examples=[[[0.0, 0.1], [5.0, 5.0]]],
    )


def _strategy_kind(value: object) -> str | None:
    if isinstance(value, str):
        return "name"
    if isinstance(value, dict | StrategySpec):
        return "spec"
    return None


# The tags pydantic puts in an error's location; they are not the API's words, and
# service.inline drops them. One branch is tried, chosen by the JSON type, so a typo in
# a name is reported once, as a name, and a bad n_init as the n_init it is.
STRATEGY_TAGS = frozenset({"name", "spec"})
Strategy = Annotated[
    Annotated[StrategyName, Tag("name")] | Annotated[StrategySpec, Tag("spec")],
    Discriminator(
        _strategy_kind,
        custom_error_type="strategy_type",
        custom_error_message="a strategy is a name ('k-means++', 'random', 'pca') or an "
        'object {"init": name, "n_init": count}',
    ),
]
# The strategies of a request (their default differs by kind).
Strategies = Annotated[list[Strategy], Field(min_length=1, max_length=16)]
DEFAULT_STRATEGIES: tuple[StrategyName | StrategySpec, ...] = ("k-means++", "random", "pca")

MissingPolicy = Annotated[
    Missing,
    Field(
        description="Rows with missing cells: `error` (422 saying how many, where), `drop` "
        "(left out; `n_samples` counts the rows used) or `impute` (SimpleImputer inside the "
        "pipeline: mean for numbers, most frequent for categories).",
    ),
]
NormalizeName = Annotated[
    Normalize,
    Field(
        description="`l2`: a Normalizer after scaling, so KMeans clusters directions "
        "(cosine k-means, as for text); `none` leaves rows as they are.",
    ),
]


class CoreParams(BaseModel):
    """The fields every id has carried since the first (always in its hashed form)."""

    estimator: EstimatorName = Field(
        "kmeans",
        description="`kmeans` (KMeans), `minibatch` (MiniBatchKMeans) or `bisecting` "
        "(BisectingKMeans, whose init is `k-means++` or `random` only).",
    )
    random_state: int = Field(
        0, ge=0, le=2**32 - 1, description="Seeds KMeans and the silhouette sample."
    )
    scale: bool = Field(True, description="Put a StandardScaler before KMeans, as the seed does.")
    algorithm: Literal["lloyd", "elkan"] = Field(
        "lloyd", description="Passed to KMeans and BisectingKMeans."
    )
    max_iter: int = Field(300, ge=1, le=100_000, description="Passed to the estimator.")
    tol: float = Field(1e-4, ge=0, allow_inf_nan=False, description="Passed to the estimator.")
    silhouette_sample_size: int | None = Field(
        300,
        ge=2,
        # An index: past 64 bits scikit-learn's slicing overflows (and orjson cannot write it).
        le=2**63 - 1,
        description="Samples drawn to score the silhouette; null scores all.",
    )

    @field_validator("tol")
    @classmethod
    def _no_negative_zero(cls, tol: float) -> float:
        # -0.0 passes ge=0 and fits like 0.0, but would hash as another benchmark.
        return float(tol) + 0.0


class LaterParams(BaseModel):
    """Fields added after ids existed: each is left out of every form (hashed or stored)
    at its default, so that every id made before it existed stays the same. A new
    parameter goes here, and into its estimators' row of :data:`ESTIMATORS`."""

    missing: MissingPolicy = DEFAULT_MISSING
    normalize: NormalizeName = DEFAULT_NORMALIZE
    batch_size: int = Field(
        1024,
        ge=1,
        le=2**31 - 1,
        description="MiniBatchKMeans' mini-batch size (estimator `minibatch` only).",
    )
    bisecting_strategy: Literal["biggest_inertia", "largest_cluster"] = Field(
        "biggest_inertia",
        description="Which cluster BisectingKMeans splits next: the one of the largest SSE "
        "(`biggest_inertia`) or of the most points (`largest_cluster`); estimator "
        "`bisecting` only.",
    )
    implementation: ImplementationName = Field(
        "sklearn",
        description="Whose K-Means fits: `sklearn` (scikit-learn's, every number as the seed "
        "computes it) or `onedal` (Intel oneDAL's, through scikit-learn-intelex: faster on "
        "large data, its numbers equal `sklearnex.cluster.KMeans`'s; estimator `kmeans` "
        "only, and only where the `onedal` extra is installed). The answer's `versions` "
        "names the implementation's package.",
    )


# Left out of the ids (not of stored forms) at its default: every stored form has had it.
IDS_AT_DEFAULT = frozenset({"estimator"})
# Fields that change the scores but not the fit: not part of a model's id.
SCORING_ONLY = frozenset({"silhouette_sample_size"})


class FitParams(LaterParams, CoreParams):
    """Every parameter of a fit and its scoring, with its default."""

    def fit_params(self) -> dict[str, Any]:
        """These fields' values by name, to build another model from (no field listed)."""
        return {name: getattr(self, name) for name in FitParams.model_fields}


def pace_form(params: FitParams) -> str:
    """What a fit's cost per unit of its weight (k x n_init) depends on beside the data:
    ``params``' fields but the seed. Computations alike in it share a pace
    (:class:`service.runtime.Pace`)."""
    return repr(sorted((n, v) for n, v in params.fit_params().items() if n != "random_state"))


def fit_form(params: FitParams, *, ids: bool = False, fit_only: bool = False) -> dict[str, Any]:
    """``params``' fields as hashed and stored: a :class:`LaterParams` field only where it is
    not its default; with ``ids``, the estimator too (see :data:`IDS_AT_DEFAULT`); with
    ``fit_only``, without the fields that do not change a fit (a model's id)."""
    out: dict[str, Any] = {}
    for name, info in FitParams.model_fields.items():
        value = getattr(params, name)
        at_default = value == info.default
        if fit_only and name in SCORING_ONLY:
            continue
        if at_default and (name in LaterParams.model_fields or (ids and name in IDS_AT_DEFAULT)):
            continue
        out[name] = value
    return out


class Clustering(BaseModel):
    """How many clusters, and the init strategies to compare."""

    n_clusters: int | None = Field(
        None,
        ge=2,
        description="Number of clusters; default the number of distinct labels. "
        "Required when the data has no labels.",
        examples=[10],
    )
    strategies: Strategies = Field(
        default_factory=lambda: list(DEFAULT_STRATEGIES),
        description='Init strategies to compare, each a name or `{"init", "n_init"}`, or '
        '`{"init": "custom", "centers": [[...], ...]}`.',
        examples=[["k-means++", "random", "pca"]],
    )


class KMeansParams(FitParams, Clustering):
    """A benchmark's KMeans: the number of clusters, the init strategies to compare and
    the fit's parameters."""
