"""Reading uploaded files into (X, y): CSV, NPY, NPZ, Parquet and JSON.

Each reader uses the library made for its format (pyarrow for CSV and Parquet, NumPy
for ``.npy``/``.npz`` with ``allow_pickle=False``, orjson for JSON) and turns every
problem into an :class:`InvalidDataError` that says what is wrong and where.
"""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet

from service.datasets import DatasetInfo, DatasetStore, as_feature_matrix, as_labels
from service.errors import InvalidDataError, PayloadTooLargeError

MEDIA_TYPES = {
    "text/csv": "csv",
    "application/x-npy": "npy",
    "application/x-npz": "npz",
    "application/vnd.apache.parquet": "parquet",
    "application/json": "json",
}
EXTENSIONS = {
    ".csv": "csv",
    ".npy": "npy",
    ".npz": "npz",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
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
    path: Path, fmt: str, *, label_column: str | None = None, max_cells: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an uploaded file as validated arrays.

    Parameters
    ----------
    path : Path
        The uploaded bytes, on disk.
    fmt : {"csv", "npy", "npz", "parquet", "json"}
        The file's format.
    label_column : str, optional
        For CSV and Parquet, the column holding the labels.
    max_cells : int
        Largest n_samples * n_features accepted.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,) or None
    """
    if label_column is not None and fmt not in TABLE_FORMATS:
        raise InvalidDataError(
            f"label_column applies to CSV and Parquet uploads, not {fmt}",
            errors=[{"loc": ["query", "label_column"], "msg": f"not applicable to {fmt}"}],
        )
    readers = {
        "csv": _read_csv,
        "parquet": _read_parquet,
        "npy": _read_npy,
        "npz": _read_npz,
        "json": _read_json,
    }
    X, y = readers[fmt](path, label_column, max_cells)
    check_cells(X.shape, max_cells)
    return X, y


def import_dataset(
    path: Path,
    fmt: str,
    label_column: str | None,
    name: str | None,
    datasets_root: Path,
    max_cells: int,
) -> tuple[DatasetInfo, bool]:
    """Read an uploaded file and store it (in a compute worker); returns the info and
    whether the dataset is new."""
    X, y = read_dataset(path, fmt, label_column=label_column, max_cells=max_cells)
    return DatasetStore(datasets_root).put(X, y, name=name, format=fmt)


def check_cells(shape: tuple[int, ...], max_cells: int) -> None:
    cells = int(np.prod(shape, dtype=np.int64)) if shape else 0
    if cells > max_cells:
        raise PayloadTooLargeError(
            f"the dataset has {' x '.join(f'{n:,}' for n in shape)} = {cells:,} values; "
            f"the limit is {max_cells:,} (CLUSTERBENCH_MAX_CELLS)"
        )


# -- tables: CSV and Parquet ------------------------------------------------------------


def _read_csv(
    path: Path, label_column: str | None, max_cells: int
) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        table = pyarrow.csv.read_csv(
            path,
            convert_options=pyarrow.csv.ConvertOptions(null_values=[""], strings_can_be_null=True),
        )
    except pa.ArrowInvalid as exc:
        message = str(exc)
        if "Expected" in message and "columns" in message:
            row, found, expected = _find_ragged_row(path)
            raise InvalidDataError(
                f"the CSV is ragged: row {row} (line {row + 2}) has {found} fields, "
                f"the header has {expected}",
                errors=[{"loc": ["row", row], "msg": f"{found} fields, expected {expected}"}],
            ) from None
        if "Empty CSV file" in message:
            raise _no_rows() from None
        raise InvalidDataError(f"the CSV cannot be read: {message}") from None
    return _table_arrays(table, label_column, max_cells, line_offset=2)


def _find_ragged_row(path: Path) -> tuple[int, int, int]:
    """The first data row whose field count differs from the header's."""
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        for i, row in enumerate(reader):
            if len(row) != len(header):
                return i, len(row), len(header)
    return -1, -1, len(header)


def _read_parquet(
    path: Path, label_column: str | None, max_cells: int
) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        parquet = pyarrow.parquet.ParquetFile(path)
        metadata = parquet.metadata
        check_cells(
            (metadata.num_rows, max(metadata.num_columns - bool(label_column), 0)), max_cells
        )
        table = parquet.read()
    except (pa.ArrowException, OSError) as exc:
        raise InvalidDataError(f"not a readable Parquet file: {exc}") from None
    return _table_arrays(table, label_column, max_cells, line_offset=None)


def _table_arrays(
    table: pa.Table, label_column: str | None, max_cells: int, *, line_offset: int | None
) -> tuple[np.ndarray, np.ndarray | None]:
    names = table.column_names
    if label_column is not None and label_column not in names:
        raise InvalidDataError(
            f"no column named {label_column!r} for the labels; the columns are "
            + ", ".join(repr(n) for n in names),
            errors=[{"loc": ["query", "label_column"], "msg": "no such column"}],
        )
    if table.num_rows == 0:
        raise _no_rows()
    features = [n for n in names if n != label_column]
    if not features:
        raise InvalidDataError("the table has no feature columns besides the labels")
    check_cells((table.num_rows, len(features)), max_cells)
    columns = []
    for j, name in enumerate(features):
        column = table.column(name)
        columns.append(_numeric_column(column, name, j, line_offset))
    dtype = np.float32 if all(c.dtype == np.float32 for c in columns) else np.float64
    X = np.empty((table.num_rows, len(columns)), dtype=dtype)
    for j, values in enumerate(columns):
        X[:, j] = values
    X = as_feature_matrix(X)
    y = None
    if label_column is not None:
        y = _label_column(table.column(label_column), label_column, line_offset)
    return X, (None if y is None else as_labels(y, X.shape[0]))


def _where(row: int, line_offset: int | None) -> str:
    return f"row {row}" + (f" (line {row + line_offset})" if line_offset else "")


def _numeric_column(
    column: pa.ChunkedArray, name: str, j: int, line_offset: int | None
) -> np.ndarray:
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind):
        if column.null_count:
            row = _first_null(column)
            raise InvalidDataError(
                f"column {name!r} has a missing value at {_where(row, line_offset)}",
                errors=[{"loc": ["row", row, name], "msg": "missing value"}],
            )
        raw: np.ndarray = column.to_numpy()
        values = raw if raw.dtype == np.float32 else raw.astype(np.float64)
        finite = np.isfinite(values)
        if not finite.all():
            row = int(np.argmin(finite))
            what = "NaN" if np.isnan(values[row]) else "infinity"
            raise InvalidDataError(
                f"column {name!r} (column {j}) has {what} at {_where(row, line_offset)}: "
                "values must be finite",
                errors=[{"loc": ["row", row, name], "msg": f"{what} is not allowed"}],
            )
        return values
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        for row, value in enumerate(column.to_pylist()):
            if value is None or not _is_number(value):
                shown = repr(value)[:40]
                raise InvalidDataError(
                    f"column {name!r} (column {j}) has a non-numeric value {shown} "
                    f"at {_where(row, line_offset)}",
                    errors=[{"loc": ["row", row, name], "msg": f"not a number: {shown}"}],
                )
    raise InvalidDataError(
        f"column {name!r} (column {j}) holds {kind} values, not numbers",
        errors=[{"loc": ["column", name], "msg": f"type {kind} is not numeric"}],
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _first_null(column: pa.ChunkedArray) -> int:
    mask = column.is_null().to_numpy(zero_copy_only=False)
    return int(np.argmax(mask))


def _label_column(column: pa.ChunkedArray, name: str, line_offset: int | None) -> np.ndarray:
    if column.null_count:
        row = _first_null(column)
        raise InvalidDataError(
            f"label column {name!r} has a missing label at {_where(row, line_offset)}",
            errors=[{"loc": ["row", row, name], "msg": "missing label"}],
        )
    kind = column.type
    labels: np.ndarray
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        labels = column.to_numpy()
        return labels
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        labels = np.asarray(column.to_pylist(), dtype=str)
        return labels
    raise InvalidDataError(
        f"label column {name!r} holds {kind} values; labels must be integers or strings",
        errors=[{"loc": ["column", name], "msg": f"type {kind} cannot be a label"}],
    )


def _no_rows() -> InvalidDataError:
    return InvalidDataError(
        "the file has no data rows; at least 2 samples are needed",
        errors=[{"loc": ["row"], "msg": "no rows"}],
    )


# -- NumPy files --------------------------------------------------------------------------


def _read_npy(
    path: Path, label_column: str | None, max_cells: int
) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        # Memory-mapped: only the header is read here, the values when validated.
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidDataError(_npy_problem(exc, ".npy")) from None
    if not isinstance(X, np.ndarray):
        raise InvalidDataError("not a .npy file holding one array")
    check_cells(X.shape, max_cells)
    return _numeric_array(X, ".npy array"), None


def _read_npz(
    path: Path, label_column: str | None, max_cells: int
) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        # Our own handle: np.load leaks the one it opens when the zip is corrupt.
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as npz:
            if "X" not in npz.files:
                raise InvalidDataError(
                    "the .npz must hold an array named 'X' (and optionally 'y'); it holds "
                    + (", ".join(repr(f) for f in npz.files) or "nothing"),
                    errors=[{"loc": ["X"], "msg": "missing"}],
                )
            X = npz["X"]
            check_cells(X.shape, max_cells)
            y = npz["y"] if "y" in npz.files else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise InvalidDataError(_npy_problem(exc, ".npz")) from None
    X = _numeric_array(X, "'X' in the .npz")
    if y is None:
        return X, None
    if y.dtype.kind not in "iuUf":
        raise InvalidDataError(
            f"'y' in the .npz holds {y.dtype} values; labels must be integers or strings",
            errors=[{"loc": ["y"], "msg": f"unsupported dtype {y.dtype}"}],
        )
    return X, as_labels(y, X.shape[0])


def _numeric_array(X: np.ndarray, what: str) -> np.ndarray:
    if X.dtype.kind not in "iuf" or X.dtype.names:
        raise InvalidDataError(
            f"the {what} holds {X.dtype} values; it must hold integers or floats",
            errors=[{"loc": ["X"], "msg": f"dtype {X.dtype} is not numeric"}],
        )
    return as_feature_matrix(X)


def _npy_problem(exc: BaseException, kind: str) -> str:
    message = str(exc)
    if "pickle" in message.lower() or "object" in message.lower():
        return (
            f"the {kind} file holds Python objects (or is not a {kind} file); only numeric "
            "arrays are accepted and nothing is ever unpickled"
        )
    return f"not a readable {kind} file: {message}"


# -- JSON -----------------------------------------------------------------------------------


def _read_json(
    path: Path, label_column: str | None, max_cells: int
) -> tuple[np.ndarray, np.ndarray | None]:
    raw = path.read_bytes()
    document: Any
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            document = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise InvalidDataError(f"not valid JSON: {exc}") from None
    if not isinstance(document, dict) or "X" not in document:
        raise InvalidDataError(
            'a JSON dataset is an object {"X": [[...], ...], "y": [...]} ("y" optional)',
            errors=[{"loc": ["X"], "msg": "missing"}],
        )
    unknown = sorted(set(document) - {"X", "y"})
    if unknown:
        raise InvalidDataError(
            f"unknown field(s) {', '.join(map(repr, unknown))}: a JSON dataset has X and y",
            errors=[{"loc": [unknown[0]], "msg": "unknown field"}],
        )
    X = as_feature_matrix(document["X"])
    y = document.get("y")
    if y is None:
        return X, None
    if (
        not isinstance(y, list)
        or any(type(v) not in (int, str) for v in y)
        or len({type(v) for v in y}) > 1
    ):
        raise InvalidDataError(
            "y must be an array of labels, all integers or all strings",
            errors=[{"loc": ["y"], "msg": "labels must be all integers or all strings"}],
        )
    return X, as_labels(y, X.shape[0])
