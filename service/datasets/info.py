"""What a stored dataset is: its id, its description (:class:`DatasetInfo`) and the
built-in datasets' names."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from service.errors import (
    InvalidParameterError,
    clip,
)
from service.tables import Column

BUILTIN_LOADERS: dict[str, str] = {
    "digits": "load_digits",
    "iris": "load_iris",
    "wine": "load_wine",
    "breast_cancer": "load_breast_cancer",
}

# The files of a stored sparse X, in place of X.npy: its CSR arrays (canonical: sorted
# indices, no duplicates), memory-mapped in the workers and never densified.
SPARSE_FILES = ("X_data.npy", "X_indices.npy", "X_indptr.npy")


# Ids are sha256 hex digests; anything else never reaches the file system.
_ID_CHARS = frozenset("0123456789abcdef")


def unknown_dataset(name: str) -> InvalidParameterError:
    """The problem of a request naming a dataset that is neither built in nor held."""
    return InvalidParameterError(
        f"unknown dataset {clip(name)}: use one of {', '.join(BUILTIN_LOADERS)} "
        "or the id of an uploaded dataset",
        errors=[{"loc": ["dataset"], "msg": "no such dataset"}],
    )


def is_id(value: str) -> bool:
    """Whether ``value`` has the form of an id: 64 lowercase hex characters."""
    return len(value) == 64 and _ID_CHARS.issuperset(value)


@dataclass(frozen=True)
class DatasetInfo:
    """What is known of a stored dataset without reading its arrays."""

    id: str
    name: str | None
    n_samples: int
    n_features: int
    has_labels: bool
    n_labels: int | None
    dtype: str
    format: str
    # Sent inline in a benchmark request rather than uploaded: kept within a bound,
    # least recently used first out (an upload stays until it is deleted).
    inline: bool = False
    # The names of X's columns, when the upload had a header (CSV, Parquet).
    feature_names: list[str] | None = None
    # A table's columns in the file's order ({"name", "kind", "missing"}), the sorted
    # categories of its categorical columns, its rows without a missing cell and its
    # width once one-hot encoded; None for plain numbers (see service.tables).
    columns: list[dict[str, Any]] | None = None
    categories: list[list[str]] | None = None
    complete_rows: int | None = None
    n_encoded: int | None = None
    # X stored as CSR arrays (text/x-libsvm, application/x-scipy-sparse uploads) and
    # how many values it stores (meta.json holds both as "sparse": {"shape", "nnz"}).
    sparse: bool = False
    nnz: int | None = None

    @property
    def density(self) -> float | None:
        """Sparse data only: the share of stored (non-zero) cells, nnz / (n * d)."""
        if self.nnz is None:
            return None
        return self.nnz / max(self.n_samples * self.n_features, 1)

    def meta(self) -> dict[str, Any]:
        """The info as meta.json holds it."""
        meta = asdict(self)
        nnz = meta.pop("nnz")
        meta["sparse"] = (
            {"shape": [self.n_samples, self.n_features], "nnz": nnz} if self.sparse else False
        )
        return meta

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> DatasetInfo:
        """The info of a meta.json (:meth:`meta`)."""
        sparse = meta.pop("sparse", False)
        if isinstance(sparse, dict):
            return cls(**meta, sparse=True, nnz=int(sparse["nnz"]))
        return cls(**meta)

    @property
    def width(self) -> int:
        """How many features KMeans sees: one-hot encoded categories included."""
        return self.n_features if self.n_encoded is None else self.n_encoded

    def table_columns(self) -> list[Column] | None:
        return None if self.columns is None else [Column(**c) for c in self.columns]

    def fit_shape(self, missing: str = "error") -> tuple[int, int]:
        """The shape KMeans fits as ``missing`` says: the rows used (``"drop"`` leaves out
        those with a missing cell) by the encoded width. What limits depending on the
        data's shape (``pca`` past min(n_samples, n_features), the plot's 2 features)
        check."""
        used = self.n_samples
        if missing == "drop" and self.complete_rows is not None:
            used = self.complete_rows
        return used, self.width

    def public(self, missing: str = "error") -> dict[str, Any]:
        """The summary a benchmark response carries: ``n_samples`` counts the rows used
        (``missing="drop"`` leaves out those with a missing cell)."""
        return {
            "id": self.id,
            "name": self.name,
            "n_samples": self.fit_shape(missing)[0],
            "n_features": self.n_features,
            "has_labels": self.has_labels,
        }

    def described(self) -> dict[str, Any]:
        """The full description the datasets endpoints answer with."""
        return {
            **self.public(),
            "format": self.format,
            "dtype": self.dtype,
            "feature_names": self.feature_names,
            "columns": self.columns,
            "sparse": self.sparse,
            **({"density": self.density} if self.sparse else {}),
            # What an upload's reader did to the file: only the upload's answer has any.
            "warnings": [],
        }
