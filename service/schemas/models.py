"""A fitted model's page, predictions and anomalies."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    Field,
)

from service.params import (
    EstimatorName,
    NormalizeName,
    StrategyName,
)
from service.schemas.common import STRICT, Rows


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
