"""Seed stability: a stability run's request, parameters and answer."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    Field,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from service.params import (
    EstimatorName,
    LaterParams,
    StrategyName,
)
from service.schemas.benchmark import BenchmarkRequest, ResultBase, StrategyParams
from service.schemas.common import LeftOut, ResultWarnings, Scores

# -- Seed stability ------------------------------------------------------------------

MAX_SEEDS = 100


class StabilityRequest(BenchmarkRequest):
    """A benchmark run under several seeds: how much does its answer depend on luck?"""

    # `seeds` replaces it: refused when sent, and left out of the schema, so that a client
    # generated from the schema does not send its default.
    random_state: SkipJsonSchema[int] = 0
    seeds: int | list[Annotated[int, Field(ge=0, le=2**32 - 1)]] = Field(
        10,
        description=f"`n` runs `random_state` 0..n-1; a list names the seeds. At most "
        f"{MAX_SEEDS}. Replaces `random_state`.",
        examples=[10],
    )

    @model_validator(mode="after")
    def _check_seeds(self) -> StabilityRequest:
        if "random_state" in self.model_fields_set:
            raise ValueError("a stability run takes `seeds`, not `random_state`")
        if isinstance(self.seeds, int):
            if not 1 <= self.seeds <= MAX_SEEDS:
                raise ValueError(f"seeds must be between 1 and {MAX_SEEDS}, got {self.seeds}")
        else:
            if not self.seeds:
                raise ValueError("seeds is empty: give at least one")
            if len(self.seeds) > MAX_SEEDS:
                raise ValueError(f"seeds has {len(self.seeds)} values; at most {MAX_SEEDS}")
            if len(set(self.seeds)) != len(self.seeds):
                raise ValueError("seeds lists a seed twice")
        return self


class MeanStd(BaseModel):
    mean: float | None
    std: float | None = Field(description="Standard deviation over the seeds (ddof=0).")


class SeedAri(BaseModel):
    mean: float | None = Field(description="Mean adjusted Rand index over the pairs of seeds.")
    min: float | None = Field(description="The smallest: the two seeds that disagree most.")


class _SeedRunKey(BaseModel):
    random_state: int
    inertia: float


class SeedRun(Scores, _SeedRunKey):
    fit_time: float


class StrategyStability(BaseModel):
    """One strategy over the seeds."""

    init: StrategyName
    n_init: int
    n_seeds: int
    inertia: MeanStd
    homogeneity: MeanStd
    completeness: MeanStd
    v_measure: MeanStd
    ari: MeanStd
    ami: MeanStd
    silhouette: MeanStd
    davies_bouldin: MeanStd
    calinski_harabasz: MeanStd
    fit_time: MeanStd
    seed_ari: SeedAri = Field(description="Agreement between the labelings of the seeds.")
    per_seed: list[SeedRun]
    warnings: list[str]


class StabilityParams(LaterParams):
    """The request after defaults were applied; `dataset` is the content id."""

    dataset: str
    n_clusters: int
    strategies: list[StrategyParams]
    seeds: list[int]
    scale: bool
    algorithm: Literal["lloyd", "elkan"]
    max_iter: int
    tol: float
    silhouette_sample_size: int | None
    estimator: EstimatorName
    left_out: LeftOut = []  # noqa: RUF012 (pydantic copies a default: it is not shared)


class StabilityResult(ResultBase):
    """Each strategy's numbers over the seeds."""

    n_clusters: int
    params: StabilityParams
    score_space: Literal["clustered"] = Field(
        description="Where silhouette, Davies-Bouldin and Calinski-Harabasz are measured: "
        "in the space KMeans clustered (after scaling); the silhouette on one sample, drawn "
        "once for every seed."
    )
    results: list[StrategyStability]
    warnings: ResultWarnings = []  # noqa: RUF012 (pydantic copies a default: it is not shared)
    versions: dict[str, str]
