"""Request and response models: the HTTP contract of ``API.md`` as pydantic models."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from service.params import DEFAULT_STRATEGIES as DEFAULT_STRATEGIES
from service.params import STRATEGY_TAGS as STRATEGY_TAGS
from service.params import EstimatorName as EstimatorName
from service.params import FitParams, KMeansParams, LaterParams, Strategies
from service.params import MissingPolicy as MissingPolicy
from service.params import NormalizeName as NormalizeName
from service.params import Strategy as Strategy
from service.params import StrategyName as StrategyName
from service.params import StrategySpec as StrategySpec

# strict: a JSON string such as "1.5" is not a number; NaN and infinity are refused.
# Data matrices are checked and converted by NumPy (service.datasets.as_feature_matrix),
# which names the row and column of a bad value, far faster than per-item validation.
Matrix = Annotated[
    Any,
    WithJsonSchema({"type": "array", "items": {"type": "array", "items": {"type": "number"}}}),
]


# Rows a model predicts: numbers, or a table's raw cells (strings, booleans and nulls) in
# its column order, or objects keyed by column name; checked by the model's preprocessing.
Rows = Annotated[
    Any,
    WithJsonSchema(
        {
            "type": "array",
            "items": {
                "anyOf": [
                    {
                        "type": "array",
                        "items": {"type": ["number", "string", "boolean", "null"]},
                    },
                    {
                        "type": "object",
                        "additionalProperties": {"type": ["number", "string", "boolean", "null"]},
                    },
                ]
            },
        }
    ),
]


def _label(value: object) -> int | str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**63:
            raise ValueError("an integer label must fit in 64 bits")
        return value
    raise ValueError(f"a label must be an integer or a string, not {type(value).__name__}")


Label = Annotated[
    int | str,
    PlainValidator(_label),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}]}),
]


# Request models are strict, as an API for programs should be: "2" is not an integer,
# 1.0 is not an integer and "yes" is not a boolean. A float field still takes a JSON
# integer (``"tol": 0``), which is a number.
STRICT = ConfigDict(extra="forbid", strict=True)


LeftOut = Annotated[
    list[StrategyName],
    Field(
        description="Default strategies left out because they cannot run here (`pca` when "
        "n_clusters > min(n_samples, n_features), or with `bisecting`); `warnings` says why. "
        "A strategy the request names is never left out: it gets 422.",
    ),
]
ResultWarnings = Annotated[
    list[str],
    Field(
        description="What the service left out or skipped, and why (scikit-learn's own "
        "warnings are in each result's `warnings`).",
    ),
]


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
        if self.X is not None and self.dataset is not None:
            raise ValueError("give either `dataset` or inline `X`, not both")
        if self.y is not None and self.X is None:
            raise ValueError("`y` labels inline `X`; it cannot be given without `X`")
        seen: set[str] = set()
        for item in self.strategies:
            name = item if isinstance(item, str) else item.init
            if name in seen:
                raise ValueError(f"strategy {name!r} is listed twice")
            seen.add(name)
            if name == "custom" and isinstance(item, str):
                raise ValueError(
                    'strategy \'custom\' is an object: {"init": "custom", "centers": [[...]]}'
                )
            if isinstance(item, StrategySpec):
                if name == "custom" and item.centers is None:
                    raise ValueError(
                        "strategy 'custom' needs `centers`: n_clusters rows of n_features"
                    )
                if name != "custom" and item.centers is not None:
                    raise ValueError(f"`centers` belong to strategy 'custom', not {name!r}")
            if (
                name in ("pca", "custom")
                and isinstance(item, StrategySpec)
                and item.n_init not in (None, 1)
            ):
                raise ValueError(f"strategy {name!r} starts from fixed centres: n_init must be 1")
        return self


class ColumnInfo(BaseModel):
    name: str
    kind: Literal["numeric", "categorical", "label", "weight"]
    missing: int = Field(description="How many cells of the column are missing.")


class DatasetSummary(BaseModel):
    id: str = Field(description="Content hash of the data (sha256, hex).")
    name: str | None = Field(description="The built-in's name, or null for client data.")
    n_samples: int
    n_features: int
    has_labels: bool


class DatasetInfo(DatasetSummary):
    """A stored dataset."""

    format: str = Field(
        description="How it arrived: builtin, csv, npy, npz, parquet, json, libsvm or "
        "scipy-sparse.",
        examples=["csv"],
    )
    dtype: str = Field(description="float64, or float32 when sent as float32.")
    feature_names: list[str] | None = Field(
        None,
        description="The names of the feature columns, from the header of an uploaded CSV "
        "or Parquet file; null when the data came without names.",
        examples=[["sepal length", "sepal width"]],
    )
    columns: list[ColumnInfo] | None = Field(
        None,
        description="A table's columns in the file's order, each with its kind and "
        "missing cells; null for data of complete numbers.",
    )
    sparse: bool = Field(
        False,
        description="Whether X is stored sparse (CSR; a text/x-libsvm or "
        "application/x-scipy-sparse upload): never densified.",
    )
    density: float | None = Field(
        None,
        description="Sparse data only: the share of stored cells, nnz / (n_samples * n_features).",
        examples=[0.001],
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="On upload: what was done to the file that its sender should know, e.g. "
        "a CSV without a header read as data, or pandas' index column dropped.",
    )


class DatasetList(BaseModel):
    datasets: list[DatasetInfo]


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


class BenchmarkResult(BaseModel):
    """A benchmark's results, one entry per strategy in the requested order."""

    id: str = Field(description="The request hash (sha256, hex).")
    cached: bool
    dataset: DatasetSummary
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


class DatasetRef(BaseModel):
    id: str = Field(description="Content hash of the data (sha256, hex).")
    name: str | None = Field(description="The built-in's name, or null for client data.")


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


class ScalerInfo(BaseModel):
    mean: list[float] = Field(description="Per-feature mean subtracted by the StandardScaler.")
    scale: list[float] = Field(description="Per-feature scale divided by the StandardScaler.")


class ClusterProfile(BaseModel):
    label: int
    size: int = Field(description="How many training rows the fit assigned to it.")
    mean: dict[str, float | None] = Field(
        description="Per feature (by column name, else `x0`, `x1`, ...), the mean of its rows."
    )
    std: dict[str, float | None] = Field(
        description="Per feature, the standard deviation of its rows (ddof=1, as pandas); "
        "null for a cluster of one row."
    )


class ModelInfo(BaseModel):
    """A fitted model: its scaler and centres, enough to assign new samples."""

    model_id: str
    init: StrategyName
    n_clusters: int
    n_features: int
    cluster_centers: list[list[float]] = Field(
        description="Cluster centres in the original feature space (n_clusters by n_features); "
        'with `normalize: "l2"` they are the scaled space\'s centres of unit rows, un-scaled: '
        "a sample is assigned after it is scaled and normalized, as `/predict` does."
    )
    scaler: ScalerInfo | None = Field(description="The StandardScaler, or null without scaling.")
    normalize: NormalizeName = Field(
        "none",
        description='`"l2"`: each row is normalized (a `Normalizer`) after scaling, before the '
        "centres; rebuilding the assignment from `scaler` and `cluster_centers` needs it.",
    )
    inertia: float
    n_iter: int | None
    estimator: EstimatorName = Field(
        description="The estimator that fitted the model.", examples=["kmeans"]
    )
    onnx_url: str = Field(
        description="Where the whole pipeline is, converted to ONNX.",
        examples=["/v1/models/0f1e.../model.onnx"],
    )
    clusters: list[ClusterProfile] | None = Field(
        description="Each cluster's training rows, in the data's own units, like BigQuery "
        "ML's `ML.CENTROIDS` and Spark's `clusterSizes`; null for a model stored before "
        "profiles were kept."
    )


class PredictRequest(BaseModel):
    model_config = STRICT

    X: Rows = Field(
        description="Samples to assign, n_samples by n_features (the model's); for a model "
        "of a table, raw rows in its column order (label and weight left out), strings "
        "and nulls included, or objects keyed by column name.",
        examples=[[[0.0] * 4]],
    )


class Prediction(BaseModel):
    labels: list[int] = Field(description="The nearest centre of each sample.")
    distances: list[float] = Field(
        description="Distance to that centre, in the space KMeans worked in (scaled when "
        "the benchmark scaled), as `KMeans.transform` measures it."
    )


class AnomaliesRequest(PredictRequest):
    contamination: float = Field(
        0.01,
        gt=0,
        lt=0.5,
        description="The share of the training rows to call anomalous: the threshold is the "
        "(1 - contamination) quantile of their distances to their own centre.",
        examples=[0.01],
    )


class AnomalyRow(BaseModel):
    label: int = Field(description="The nearest centre.")
    distance: float = Field(description="Distance to that centre, as `/predict` measures it.")
    is_anomaly: bool = Field(description="Whether `distance` is above the threshold.")


class Anomalies(BaseModel):
    """BigQuery ML's `ML.DETECT_ANOMALIES` for k-means: rows far from their centre."""

    threshold: float = Field(
        description="The (1 - contamination) quantile of the training rows' distances to "
        "their own centre (`numpy.quantile`, linear)."
    )
    rows: list[AnomalyRow] = Field(description="One per sample, in order.")


class Problem(BaseModel):
    """An RFC 9457 problem detail."""

    type: str = Field(examples=["urn:clusterbench:problem:invalid-data"])
    title: str = Field(examples=["Invalid data"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["X is ragged: row 2 has 3 values, row 0 has 2"])
    errors: list[dict[str, Any]] = Field(
        default_factory=list, description="One entry per problem: `loc` (where) and `msg`."
    )


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class JobState(StrEnum):
    """Where a job is: queued, then running, then finished one of three ways."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the job has ended (it changes no more)."""
        return self in FINISHED_STATES


ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)
FINISHED_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def iso_utc(moment: datetime) -> str:
    """``2026-01-01T12:00:00.000Z``: ISO 8601 in UTC, to the millisecond."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


# A moment the API answers as ISO 8601 UTC text, and the client reads as a datetime.
Timestamp = Annotated[datetime, PlainSerializer(iso_utc, return_type=str)]

# The API always sends every field of a job; a client reads one that says less (an older
# service: a queued job with no progress yet) with these defaults. The schema says what the
# API sends: every field required, none of them null unless it may be.
_SENT_IN_FULL = ConfigDict(json_schema_serialization_defaults_required=True)


class JobProgress(BaseModel):
    # How far a job has come: `done` of `total` steps, in `stage`.

    model_config = _SENT_IN_FULL

    done: int = Field(
        0, description="Steps done (strategies fitted); never decreases.", examples=[1]
    )
    total: int | SkipJsonSchema[None] = Field(
        None, description="Steps in all; `done` reaches it on success.", examples=[3]
    )
    stage: str | SkipJsonSchema[None] = Field(
        None,
        description="What runs now: `queued`, a strategy's name, `storing`, or `done`.",
        examples=["random"],
    )


class Job(BaseModel):
    """A long computation run in the background: poll it, follow its events, or cancel it."""

    # The API's answer, and what the client (service.client) returns for it. The job's
    # stored record is service.job_records.JobRecord.

    model_config = _SENT_IN_FULL

    id: str = Field(description="The job's id (sha256-sized hex).")
    kind: Literal["benchmark", "sweep", "stability"] | SkipJsonSchema[None] = Field(
        None,
        description="What the job computes: `POST /v1/benchmarks`, `/v1/sweeps` or "
        "`/v1/stability` asked with `Prefer: respond-async`.",
    )
    state: JobState
    progress: JobProgress = Field(default_factory=JobProgress)
    created_at: Timestamp | SkipJsonSchema[None] = Field(
        None, description="ISO 8601, UTC.", examples=["2026-01-01T12:00:00.000Z"]
    )
    started_at: Timestamp | None = Field(
        None, description="When it began computing (ISO 8601, UTC)."
    )
    finished_at: Timestamp | None = Field(None, description="When it ended (ISO 8601, UTC).")
    result_url: str | None = Field(
        None,
        description="Where the result is, once the job has succeeded: "
        "`/v1/benchmarks/{id}`, `/v1/sweeps/{id}` or `/v1/stability/{id}`.",
        examples=["/v1/benchmarks/<id>"],
    )
    error: Problem | None = Field(None, description="Why it failed or was cancelled, as a problem.")

    @field_validator("progress", mode="before")
    @classmethod
    def _no_progress_yet(cls, value: Any) -> Any:
        # A queued job may not report progress at all.
        return JobProgress() if value is None else value

    @property
    def finished(self) -> bool:
        """Whether the job has ended."""
        return self.state.finished


class JobList(BaseModel):
    """A page of jobs, newest first."""

    jobs: list[Job]
    next_cursor: str | None = Field(
        description="Pass as `?cursor=` for the next page; null on the last page."
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
        if self.X is not None and self.dataset is not None:
            raise ValueError("give either `dataset` or inline `X`, not both")
        if self.y is not None and self.X is None:
            raise ValueError("`y` labels inline `X`; it cannot be given without `X`")
        count = (
            len(set(self.k))
            if isinstance(self.k, list)
            else (self.k.max - self.k.min + 1 if self.k is not None else 9)
        )
        if isinstance(self.k, list) and not self.k:
            raise ValueError("k is empty: give at least one value")
        if count > MAX_K_VALUES:
            raise ValueError(f"k has {count} values; a sweep takes at most {MAX_K_VALUES}")
        seen: set[str] = set()
        for item in self.strategies:
            name = item if isinstance(item, str) else item.init
            if name in seen:
                raise ValueError(f"strategy {name!r} is listed twice")
            seen.add(name)
            if isinstance(item, StrategySpec) and item.centers is not None:
                # Refused here, in the worker decoding a large body: never sent back.
                raise ValueError(
                    "a sweep cannot use strategy 'custom' or `centers`: centres fit one k only"
                )
            if name == "pca" and isinstance(item, StrategySpec) and item.n_init not in (None, 1):
                raise ValueError("strategy 'pca' starts from fixed centres: n_init must be 1")
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


class SweepPoint(BaseModel):
    """One k and strategy: the benchmark's numbers at that k."""

    k: int
    init: StrategyName
    n_init: int
    inertia: float
    n_iter: int | None
    homogeneity: float | None
    completeness: float | None
    v_measure: float | None
    ari: float | None
    ami: float | None
    silhouette: float | None
    davies_bouldin: float | None
    calinski_harabasz: float | None
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


class SweepResult(BaseModel):
    """A sweep's numbers for each (k, strategy), and the recommended k."""

    id: str = Field(description="The request hash (sha256, hex).")
    cached: bool
    dataset: DatasetSummary
    params: SweepParams
    score_space: Literal["clustered"] = Field(
        description="Where silhouette, Davies-Bouldin and Calinski-Harabasz are measured: "
        "in the space KMeans clustered (after scaling), where k is chosen."
    )
    results: list[SweepPoint] = Field(
        description="Each (k, strategy), k ascending; a strategy that cannot run at a k "
        "(`pca` past min(n_samples, n_features)) is skipped there, with a warning."
    )
    warnings: ResultWarnings = []
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


class SeedRun(BaseModel):
    random_state: int
    inertia: float
    homogeneity: float | None
    completeness: float | None
    v_measure: float | None
    ari: float | None
    ami: float | None
    silhouette: float | None
    davies_bouldin: float | None
    calinski_harabasz: float | None
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


class StabilityResult(BaseModel):
    """Each strategy's numbers over the seeds."""

    id: str = Field(description="The request hash (sha256, hex).")
    cached: bool
    dataset: DatasetSummary
    n_clusters: int
    params: StabilityParams
    score_space: Literal["clustered"] = Field(
        description="Where silhouette, Davies-Bouldin and Calinski-Harabasz are measured: "
        "in the space KMeans clustered (after scaling); the silhouette on one sample, drawn "
        "once for every seed."
    )
    results: list[StrategyStability]
    warnings: ResultWarnings = []
    versions: dict[str, str]
