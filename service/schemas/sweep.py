"""Choosing k: a sweep's request, parameters and answer."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    Field,
    model_validator,
)

from service.params import (
    EstimatorName,
    FitParams,
    LaterParams,
    Strategies,
    StrategyName,
    StrategySpec,
)
from service.schemas.benchmark import ResultBase, StrategyParams
from service.schemas.common import (
    STRICT,
    Label,
    Matrix,
    ResultWarnings,
    Scores,
    check_source,
    named_strategies,
)

# -- Choosing k ----------------------------------------------------------------------


class KRange(BaseModel):
    """Every k from `min` to `max`, both included."""

    model_config = STRICT

    min: int = Field(ge=2, le=10_000, examples=[2])
    max: int = Field(ge=2, le=10_000, examples=[10])

    @model_validator(mode="after")
    def _ordered(self) -> KRange:
        if self.max < self.min:
            raise ValueError(f"k.max ({self.max}) is smaller than k.min ({self.min})")
        return self


MAX_K_VALUES = 50
SWEEP_STRATEGIES: tuple[StrategyName | StrategySpec, ...] = ("k-means++",)


class SweepSource(BaseModel):
    """The data a sweep clusters, its values of k and its strategies."""

    dataset: str | None = Field(
        None,
        description="A built-in name or the id of an uploaded dataset; default `digits`. "
        "Must be absent when `X` is given.",
        examples=["iris"],
    )
    X: Matrix | None = Field(None, description="Inline data, n_samples by n_features.")
    y: list[Label] | None = Field(None, description="Inline ground-truth labels, optional.")
    k: list[Annotated[int, Field(ge=2, le=10_000)]] | KRange | None = Field(
        None,
        description='The values of k: a list of ints >= 2, or `{"min", "max"}`; '
        f"default 2..10; at most {MAX_K_VALUES} values, each <= n_samples - 1.",
        examples=[{"min": 2, "max": 8}],
    )
    strategies: Strategies = Field(
        default_factory=lambda: list(SWEEP_STRATEGIES),
        description="Init strategies (not `custom`: its centres fit one k); default "
        '`["k-means++"]`.',
    )


class SweepRequest(FitParams, SweepSource):
    """A range of k to compare: the same fit and scores as a benchmark for each k."""

    model_config = STRICT

    @model_validator(mode="after")
    def _check(self) -> SweepRequest:
        check_source(self.X, self.dataset, self.y)
        count = (
            len(set(self.k))
            if isinstance(self.k, list)
            else (self.k.max - self.k.min + 1 if self.k is not None else 9)
        )
        if isinstance(self.k, list) and not self.k:
            raise ValueError("k is empty: give at least one value")
        if count > MAX_K_VALUES:
            raise ValueError(f"k has {count} values; a sweep takes at most {MAX_K_VALUES}")
        for _, spec in named_strategies(self.strategies):
            if spec is not None and spec.centers is not None:
                # Refused here, in the worker decoding a large body: never sent back.
                raise ValueError(
                    "a sweep cannot use strategy 'custom' or `centers`: centres fit one k only"
                )
        return self

    def k_list(self) -> list[int] | None:
        if isinstance(self.k, KRange):
            return list(range(self.k.min, self.k.max + 1))
        return self.k


class SweepParams(LaterParams):
    """The request after defaults were applied; `dataset` is the content id."""

    dataset: str
    k: list[int]
    strategies: list[StrategyParams]
    random_state: int
    scale: bool
    estimator: EstimatorName
    algorithm: Literal["lloyd", "elkan"]
    max_iter: int
    tol: float
    silhouette_sample_size: int | None


class _SweepPointKey(BaseModel):
    k: int
    init: StrategyName
    n_init: int
    inertia: float
    n_iter: int | None


class SweepPoint(Scores, _SweepPointKey):
    """One k and strategy: the benchmark's numbers at that k."""

    fit_time: float = Field(description="Seconds to fit the pipeline.")
    warnings: list[str]


class RecommendedK(BaseModel):
    """The k each criterion picks (null when it cannot)."""

    silhouette: int | None = Field(description="The k of the largest silhouette.")
    davies_bouldin: int | None = Field(description="The k of the smallest Davies-Bouldin index.")
    calinski_harabasz: int | None = Field(
        description="The k of the largest Calinski-Harabasz index."
    )
    elbow: int | None = Field(description="The knee of inertia against k (Kneedle).")


class SweepResult(ResultBase):
    """A sweep's numbers for each (k, strategy), and the recommended k."""

    params: SweepParams
    score_space: Literal["clustered"] = Field(
        description="Where silhouette, Davies-Bouldin and Calinski-Harabasz are measured: "
        "in the space KMeans clustered (after scaling), where k is chosen."
    )
    results: list[SweepPoint] = Field(
        description="Each (k, strategy), k ascending; a strategy that cannot run at a k "
        "(`pca` past min(n_samples, n_features)) is skipped there, with a warning."
    )
    warnings: ResultWarnings = []  # noqa: RUF012 (pydantic copies a default: it is not shared)
    recommended_k: RecommendedK = Field(
        description="The first strategy's recommended k (the first of `strategies`; "
        "`k-means++` by default): the same as its entry in `recommended_k_by_strategy`."
    )
    recommended_k_by_strategy: dict[str, RecommendedK] = Field(
        description="Each strategy's recommended k, by its `init`, in the order of "
        "`strategies`: each criterion applied to that strategy's own results. The plot "
        "marks every one of them with a dashed line in the strategy's colour."
    )
    plot_url: str
    versions: dict[str, str]
