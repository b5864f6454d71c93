"""Reading uploaded files into (X, y): CSV, NPY, NPZ, Parquet, JSON, and sparse data
(libsvm text, ``scipy.sparse.save_npz`` files) as a CSR matrix.

Each reader uses the library made for its format (pyarrow for CSV and Parquet, NumPy
for ``.npy``/``.npz`` with ``allow_pickle=False``, orjson for JSON, scikit-learn's
``load_svmlight_file`` for libsvm) and turns every problem into an
:class:`InvalidDataError` that says what is wrong and where.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from service.datasets import DatasetStore, is_sparse
from service.errors import InvalidDataError
from service.formats.delimited import _read_csv
from service.formats.json_rows import _read_json
from service.formats.limits import (
    DEFAULT_MAX_DATASET_BYTES,
    Arrays,
    Bounds,
    DataLimits,
    ReadNotes,
    Upload,
    check_cells,
    check_sparse_size,
    check_stored_bytes,
    label_bytes,
)
from service.formats.numpy_files import _read_npy, _read_npz
from service.formats.parquet import _read_parquet
from service.formats.sparse import _read_libsvm, _read_scipy_sparse

__all__ = [
    "DEFAULT_MAX_DATASET_BYTES",
    "EXTENSIONS",
    "MEDIA_TYPES",
    "TABLE_FORMATS",
    "Bounds",
    "DataLimits",
    "ReadNotes",
    "Upload",
    "check_cells",
    "check_sparse_size",
    "check_stored_bytes",
    "format_of",
    "import_upload",
    "label_bytes",
    "read_dataset",
]


MEDIA_TYPES = {
    "text/csv": "csv",
    "application/x-npy": "npy",
    "application/x-npz": "npz",
    "application/vnd.apache.parquet": "parquet",
    "application/json": "json",
    "text/x-libsvm": "libsvm",
    "application/x-scipy-sparse": "scipy-sparse",
}
EXTENSIONS = {
    ".csv": "csv",
    ".npy": "npy",
    ".npz": "npz",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".svm": "libsvm",
    ".libsvm": "libsvm",
}
TABLE_FORMATS = frozenset({"csv", "parquet"})


def format_of(media_type: str | None, filename: str | None = None) -> str | None:
    """The format named by a media type, else by a file name's extension."""
    if media_type:
        found = MEDIA_TYPES.get(media_type.split(";")[0].strip().lower())
        if found:
            return found
    if filename:
        return EXTENSIONS.get(Path(filename).suffix.lower())
    return None


def read_dataset(
    path: Path,
    fmt: str,
    *,
    label_column: str | None = None,
    max_cells: int,
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES,
    notes: ReadNotes | None = None,
    max_expansion: float | None = None,
    max_sparse_features: int = DataLimits.max_sparse_features,
) -> Arrays:
    """Read an uploaded file as validated arrays.

    Shapes and sizes are checked against the bounds from what each format declares
    (``.npy`` headers, zip directories, Parquet metadata) before any value is decoded.

    Parameters
    ----------
    path : Path
        The uploaded bytes, on disk.
    fmt : {"csv", "npy", "npz", "parquet", "json", "libsvm", "scipy-sparse"}
        The file's format.
    label_column : str, optional
        For CSV and Parquet, the column holding the labels.
    max_cells : int
        Largest n_samples * n_features accepted.
    max_dataset_bytes : int
        Largest stored size accepted: X (float64, or float32 when sent as float32)
        plus the labels, in bytes.
    notes : ReadNotes, optional
        Filled with the feature names and warnings, when given.
    max_expansion : float, optional
        Largest ratio of the stored size to the file's size; unbounded when None.
    max_sparse_features : int
        Largest n_features of sparse data, whose size is counted in stored values.

    Returns
    -------
    X : ndarray or scipy.sparse.csr_matrix of shape (n_samples, n_features)
        A CSR matrix (canonical, explicit zeros removed) for sparse formats.
    y : ndarray of shape (n_samples,) or None
    """
    if label_column is not None and fmt not in TABLE_FORMATS:
        raise InvalidDataError(
            f"label_column applies to CSV and Parquet uploads, not {fmt}",
            errors=[{"loc": ["query", "label_column"], "msg": f"not applicable to {fmt}"}],
        )
    notes = notes or ReadNotes()
    if (notes.categorical or notes.weight_column) and fmt not in TABLE_FORMATS:
        raise InvalidDataError(
            f"categorical and weight_column apply to CSV and Parquet uploads, not {fmt}",
            errors=[{"loc": ["query", "weight_column"], "msg": f"not applicable to {fmt}"}],
        )
    readers: dict[str, Callable[[Path, str | None, Bounds, ReadNotes], Arrays]] = {
        "csv": _read_csv,
        "parquet": _read_parquet,
        "npy": _read_npy,
        "npz": _read_npz,
        "json": _read_json,
        "libsvm": _read_libsvm,
        "scipy-sparse": _read_scipy_sparse,
    }
    bounds = Bounds(max_cells, max_dataset_bytes, max_sparse_features=max_sparse_features)
    if max_expansion is not None:
        bounds = dataclasses.replace(
            bounds, sent_bytes=path.stat().st_size, max_expansion=max_expansion
        )
    X, y = readers[fmt](path, label_column, bounds, notes)
    if is_sparse(X):
        # Counted in stored values, not rows times columns (each reader checked the same
        # from what the file declares, before decoding).
        y_bytes = 0 if y is None else y.nbytes
        check_sparse_size(X.shape, X.nnz, X.dtype.itemsize, X.indices.itemsize, y_bytes, bounds)
        return X, y
    check_cells(X.shape, max_cells)
    y_bytes = 0 if y is None else y.nbytes
    table_bytes = 0 if notes.parts is None else notes.parts.nbytes
    check_stored_bytes(X.shape, X.dtype.itemsize, y_bytes, max_dataset_bytes, table_bytes)
    bounds.check_expansion(X.shape, X.dtype.itemsize, y_bytes + table_bytes)
    return X, y


def import_upload(
    path: Path,
    fmt: str,
    label_column: str | None,
    name: str | None,
    datasets_root: Path,
    max_cells: int,
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES,
    *,
    private: bool = False,
    max_expansion: float | None = None,
    datasets_max_bytes: int | None = None,
    categorical: frozenset[str] = frozenset(),
    weight_column: str | None = None,
    max_sparse_features: int = DataLimits.max_sparse_features,
) -> Upload:
    """Read an uploaded file and store it (in a compute worker), with the reader's warnings.

    ``private``: the name and columns are the sender's (a tenant's claim), not stored
    with the bytes, which another tenant sending the same numbers shares. A new dataset
    that would take the stored uploads past ``datasets_max_bytes`` is refused (507).
    """
    notes = ReadNotes(categorical=categorical, weight_column=weight_column)
    X, y = read_dataset(
        path,
        fmt,
        label_column=label_column,
        max_cells=max_cells,
        max_dataset_bytes=max_dataset_bytes,
        notes=notes,
        max_expansion=max_expansion,
        max_sparse_features=max_sparse_features,
    )
    fmt = notes.format or fmt
    parts = notes.parts
    info, created = DatasetStore(datasets_root).put(
        X,
        y,
        name=None if private else name,
        format=fmt,
        feature_names=None if private else notes.feature_names,
        parts=parts.anonymous() if private and parts is not None else parts,
        room=datasets_max_bytes,
        npy_file=notes.npy_file,
    )
    if info.format == "builtin":
        # The same numbers as a built-in's stored copy: the answer describes the file that
        # was sent (its format and columns), not the copy's "builtin" without names.
        info = dataclasses.replace(
            info, name=name, format=fmt, feature_names=notes.feature_names, inline=False
        )
    columns = None
    if info.columns is not None and parts is not None:
        columns = [{**c, "name": p.name} for c, p in zip(info.columns, parts.columns, strict=True)]
    return Upload(info, created, notes.warnings, notes.feature_names, columns)
