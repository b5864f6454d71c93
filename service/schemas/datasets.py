"""A dataset's description, as the API answers it."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    Field,
)


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


class DatasetRef(BaseModel):
    id: str = Field(description="Content hash of the data (sha256, hex).")
    name: str | None = Field(description="The built-in's name, or null for client data.")
