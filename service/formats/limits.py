"""The bounds every reader checks before it decodes: values, stored bytes, expansion
of a compressed upload, the width of sparse data; and what a reader notes beside X, y."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.datasets import DatasetInfo
from service.errors import PayloadTooLargeError
from service.settings import Settings
from service.tables import TableParts

# One place for the default: the setting's own (uploads are bounded even when a caller
# does not pass the bound).
DEFAULT_MAX_DATASET_BYTES: int = Settings.model_fields["max_dataset_bytes"].default

# What every format's reader returns: X (a canonical CSR matrix for the sparse formats)
# and its labels, or None.
Arrays = tuple[Any, np.ndarray | None]


@dataclass(frozen=True)
class DataLimits:
    """The bounds on one dataset, and on the inline data kept on disk."""

    max_cells: int = Settings.model_fields["max_cells"].default
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES
    inline_max_bytes: int = Settings.model_fields["inline_max_bytes"].default
    max_expansion: float = Settings.model_fields["max_expansion"].default
    datasets_max_bytes: int = Settings.model_fields["datasets_max_bytes"].default
    max_sparse_features: int = Settings.model_fields["max_sparse_features"].default

    @classmethod
    def from_settings(cls, settings: Settings) -> DataLimits:
        """The limits the ``settings`` of the same names set."""
        names = [field.name for field in dataclasses.fields(cls)]
        return cls(**{name: getattr(settings, name) for name in names})


@dataclass
class ReadNotes:
    """What a reader learnt beside the arrays: the feature columns' names (tables with a
    header), a table's columns, categories and weights (``parts``), and what it did that
    the client should hear of. ``categorical`` and ``weight_column`` are what the upload
    asked of the columns (``?categorical=``, ``?weight_column=``)."""

    feature_names: list[str] | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    parts: TableParts | None = None
    categorical: frozenset[str] = frozenset()
    weight_column: str | None = None
    # The format the reader found, when the file was another than its name said (an
    # .npz written by scipy.sparse.save_npz is sparse data).
    format: str | None = None
    # An .npy file that holds X's values as the store would write them (X is a view of
    # it, not a conversion): stored by a link to it instead of a copy.
    npy_file: Path | None = None


@dataclass(frozen=True)
class Upload:
    """A stored upload: its info, whether it is new, and the reader's warnings."""

    info: DatasetInfo
    created: bool
    warnings: list[str]
    # The columns' names the file had (the stored bytes carry them only when shared),
    # and a table's columns under those names.
    feature_names: list[str] | None = None
    columns: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Bounds:
    """What one upload may grow to once decoded."""

    max_cells: int
    max_dataset_bytes: int
    # The upload's own size, and how many times that its dataset may take stored.
    sent_bytes: int | None = None
    max_expansion: float = Settings.model_fields["max_expansion"].default
    max_sparse_features: int = Settings.model_fields["max_sparse_features"].default

    def check_expansion(self, shape: tuple[int, ...], x_itemsize: int, y_bytes: int) -> None:
        """Refuse (413) an upload whose dataset would take more than ``max_expansion``
        times its own bytes: a small compressed file must not become a huge dataset."""
        if self.sent_bytes is None:
            return
        self.check_stored_expansion(math.prod(shape) * x_itemsize + y_bytes)

    def check_stored_expansion(self, stored: int) -> None:
        """:meth:`check_expansion` of a dataset taking ``stored`` bytes."""
        if self.sent_bytes is None:
            return
        if stored > self.max_expansion * max(self.sent_bytes, 1):
            raise PayloadTooLargeError(
                f"the upload of {_size(self.sent_bytes)} would expand to {_size(stored)} "
                f"stored, more than {self.max_expansion:g} times its size "
                "(CLUSTERBENCH_MAX_EXPANSION); send the data less compressed"
            )


def check_cells(shape: tuple[int, ...], max_cells: int, *, what: str = "the dataset has") -> None:
    """Refuse (413) a shape of more than ``max_cells`` values."""
    # Python integers: a declared shape such as (10**12, 10**12) must not wrap around.
    cells = math.prod(shape) if shape else 0
    if cells > max_cells:
        product = "" if len(shape) == 1 else f"{' x '.join(f'{n:,}' for n in shape)} = "
        raise PayloadTooLargeError(
            f"{what} {product}{cells:,} values; the limit is {max_cells:,} (CLUSTERBENCH_MAX_CELLS)"
        )


def check_sparse_size(
    shape: tuple[int, ...],
    nnz: int,
    itemsize: int,
    index_itemsize: int,
    y_bytes: int,
    bounds: Bounds,
) -> None:
    """Refuse (413) sparse data past the bounds, counted as it is stored: ``nnz`` values
    (``itemsize`` bytes each) and their column indices, a row pointer per row, and the
    labels; its width past ``max_sparse_features``. Rows times columns never counts: a
    100,000 x 50,000 matrix at 0.1 % takes what its 5 million values take."""
    n_samples, n_features = shape
    if n_features > bounds.max_sparse_features:
        raise PayloadTooLargeError(
            f"the sparse data has {n_features:,} features; the limit is "
            f"{bounds.max_sparse_features:,} (CLUSTERBENCH_MAX_SPARSE_FEATURES): the "
            "fitted centres are dense, n_clusters x n_features"
        )
    check_cells((nnz,), bounds.max_cells, what="the sparse data stores")
    stored = nnz * (itemsize + index_itemsize) + (n_samples + 1) * index_itemsize + y_bytes
    if stored > bounds.max_dataset_bytes:
        raise PayloadTooLargeError(
            f"the sparse data would take {_size(stored)} stored ({nnz:,} values of "
            f"{itemsize} bytes and their {index_itemsize}-byte indices, {n_samples:,} rows"
            f"{' and their labels' if y_bytes else ''}); the limit is "
            f"{_size(bounds.max_dataset_bytes)} (CLUSTERBENCH_MAX_DATASET_BYTES)"
        )
    bounds.check_stored_expansion(stored)


def check_stored_bytes(
    shape: tuple[int, ...],
    x_itemsize: int,
    y_bytes: int,
    max_dataset_bytes: int,
    table_bytes: int = 0,
) -> None:
    """Refuse (413) a dataset whose stored arrays would exceed ``max_dataset_bytes``.

    Parameters
    ----------
    shape : tuple of int
        (n_samples, n_features) of X.
    x_itemsize : int
        Bytes per value of X as stored: 8 (float64) or 4 (float32).
    y_bytes : int
        Bytes of the labels as stored (see :func:`label_bytes`).
    max_dataset_bytes : int
        The bound (``CLUSTERBENCH_MAX_DATASET_BYTES``).
    table_bytes : int
        Bytes of a table's categorical codes, categories and weights
        (:attr:`service.tables.TableParts.nbytes`).
    """
    x_bytes = math.prod(shape) * x_itemsize
    total = x_bytes + y_bytes + table_bytes
    if total > max_dataset_bytes:
        labels = f" plus {_size(y_bytes)} of labels" if y_bytes else ""
        if table_bytes:
            labels += f" plus {_size(table_bytes)} of categories and weights"
        raise PayloadTooLargeError(
            f"the dataset would take {_size(total)} stored ({_size(x_bytes)} for "
            f"{' x '.join(f'{n:,}' for n in shape)} values{labels}); the limit is "
            f"{_size(max_dataset_bytes)} (CLUSTERBENCH_MAX_DATASET_BYTES)"
        )


def label_bytes(y: Any) -> int:
    """Bytes the labels of a JSON document (a list) take once stored as an array.

    String labels are stored as fixed-width unicode: 4 bytes per character of the
    longest label, for every label; integers take 8 bytes each.
    """
    if not isinstance(y, list) or not y:
        return 0
    if all(type(v) is str for v in y):
        return len(y) * 4 * max(map(len, y))
    return len(y) * 8


def _size(n: int) -> str:
    """A byte count people can read, exact in brackets: ``1.0 GiB (1,120,000,000 bytes)``."""
    for unit, factor in (("EiB", 2**60), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= factor:
            return f"{n / factor:,.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"
