"""A benchmark: its request, its parameters after defaults, its answer and its list."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    Field,
    field_validator,
    model_validator,
)

from service.params import (
    EstimatorName,
    KMeansParams,
    LaterParams,
    StrategyName,
)
from service.schemas.common import (
    STRICT,
    Label,
    LeftOut,
    Matrix,
    ResultWarnings,
    check_source,
    named_strategies,
)
from service.schemas.datasets import DatasetRef, DatasetSummary


class BenchmarkSource(BaseModel):
    """The data a benchmark (or a stability run) clusters."""

    dataset: str | None = Field(
        None,
        description="A built-in name (`digits`, `iris`, `wine`, `breast_cancer`) or the id of "
        "an uploaded dataset; `digits` when neither `dataset` nor `X` is given. Must be "
        "absent when `X` is given.",
        examples=["digits"],
    )
    X: Matrix | None = Field(
        None,
        description="Inline data, n_samples by n_features.",
        examples=[[[0.0, 0.1], [0.2, 0.0], [5.0, 5.1], [5.2, 4.9]]],
    )
    y: list[Label] | None = Field(
        None,
        description="Inline ground-truth labels for `X` (integers or strings), optional.",
        examples=[[0, 0, 1, 1]],
    )


class BenchmarkRequest(KMeansParams, BenchmarkSource):
    """What to benchmark: a dataset, the init strategies to compare, and KMeans' parameters.

    Every field is optional: `{}` runs scikit-learn's digits example.
    """

    model_config = STRICT

    @field_validator("y")
    @classmethod
    def _same_label_type(cls, y: list[int | str] | None) -> list[int | str] | None:
        if y:
            first = type(y[0])
            for i, label in enumerate(y):
                if type(label) is not first:
                    raise ValueError(
                        f"labels must be all integers or all strings: y[0] is "
                        f"{first.__name__}, y[{i}] is {type(label).__name__}"
                    )
        return y

    @model_validator(mode="after")
    def _check_source(self) -> BenchmarkRequest:
        check_source(self.X, self.dataset, self.y)
        for name, spec in named_strategies(self.strategies):
            if name == "custom" and spec is None:
                raise ValueError(
                    'strategy \'custom\' is an object: {"init": "custom", "centers": [[...]]}'
                )
            if spec is not None:
                if name == "custom" and spec.centers is None:
                    raise ValueError(
                        "strategy 'custom' needs `centers`: n_clusters rows of n_features"
                    )
                if name != "custom" and spec.centers is not None:
                    raise ValueError(f"`centers` belong to strategy 'custom', not {name!r}")
        return self


class StrategyParams(BaseModel):
    init: StrategyName
    n_init: int
    centers: list[list[float]] | None = Field(
        None, description="The custom centres as sent (present for `custom` only)."
    )


class BenchmarkParams(LaterParams):
    """The request after defaults were applied; `dataset` is the content id."""

    dataset: str
    n_clusters: int
    strategies: list[StrategyParams]
    random_state: int
    scale: bool
    algorithm: Literal["lloyd", "elkan"]
    max_iter: int
    tol: float
    silhouette_sample_size: int | None
    estimator: EstimatorName = "kmeans"
    left_out: LeftOut = []  # noqa: RUF012 (pydantic copies a default: it is not shared)


class StrategyResult(BaseModel):
    """One strategy's timing and scores, as the seed reports them."""

    init: StrategyName
    n_init: int
    fit_time: float = Field(description="Seconds to fit the pipeline.")
    inertia: float
    n_iter: int | None = Field(description="Iterations run; null for `bisecting`.")
    homogeneity: float | None
    completeness: float | None
    v_measure: float | None
    ari: float | None = Field(description="Adjusted Rand index.")
    ami: float | None = Field(description="Adjusted mutual information.")
    silhouette: float | None
    davies_bouldin: float | None = Field(
        None, description="Davies-Bouldin index on the data as given (lower is better)."
    )
    calinski_harabasz: float | None = Field(
        None, description="Calinski-Harabasz index on the data as given (higher is better)."
    )
    model_id: str
    warnings: list[str] = Field(
        description="Warnings scikit-learn raised while fitting, e.g. ConvergenceWarning."
    )


class ResultBase(BaseModel):
    """What every stored answer (a benchmark, a sweep, a stability run) begins with."""

    id: str = Field(description="The request hash (sha256, hex).")
    cached: bool
    dataset: DatasetSummary


class BenchmarkResult(ResultBase):
    """A benchmark's results, one entry per strategy in the requested order."""

    n_clusters: int
    params: BenchmarkParams
    score_space: Literal["input"] = Field(
        "input",
        description="Where silhouette, Davies-Bouldin and Calinski-Harabasz are measured: "
        "on the data as given, as the seed does.",
    )
    results: list[StrategyResult]
    warnings: ResultWarnings = []
    plot_url: str | None = Field(
        description="The decision-boundary plot; null when the data has one feature (the "
        "plot draws a plane: it needs two)."
    )
    versions: dict[str, str]


class BenchmarkSummary(BaseModel):
    """A stored benchmark in a list: enough to choose it, `url` for the rest."""

    id: str = Field(description="The request hash (sha256, hex).")
    dataset: DatasetRef
    n_clusters: int
    strategies: list[StrategyName] = Field(description="The init strategies, in order.")
    created_at: str = Field(
        description="When it was stored (ISO 8601, UTC).", examples=["2026-01-01T12:00:00.000Z"]
    )
    plot_url: str | None = Field(description="Null when the data has one feature.")
    url: str = Field(examples=["/v1/benchmarks/<id>"])


class BenchmarkList(BaseModel):
    """A page of benchmarks, newest first."""

    benchmarks: list[BenchmarkSummary]
    next_cursor: str | None = Field(
        description="Pass as `?cursor=` for the next page; null on the last page."
    )
