"""Reading uploaded files into (X, y): CSV, NPY, NPZ, Parquet, JSON, and sparse data
(libsvm text, ``scipy.sparse.save_npz`` files) as a CSR matrix.

Each reader uses the library made for its format (pyarrow for CSV and Parquet, NumPy
for ``.npy``/``.npz`` with ``allow_pickle=False``, orjson for JSON, scikit-learn's
``load_svmlight_file`` for libsvm) and turns every problem into an
:class:`InvalidDataError` that says what is wrong and where.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import urllib.parse
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import orjson

from service.datasets import (
    DatasetInfo,
    DatasetStore,
    as_feature_matrix,
    as_labels,
    is_sparse,
)
from service.errors import InvalidDataError, PayloadTooLargeError
from service.lazy import LazyModule
from service.settings import Settings
from service.tables import Column, TableParts

# pyarrow reads CSV and Parquet, SciPy and scikit-learn sparse data, in the data workers:
# the API process never loads them.
if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute
    import pyarrow.csv
    import pyarrow.parquet
    import scipy.sparse
    import sklearn.datasets
else:
    pa = pyarrow = LazyModule("pyarrow", "compute", "csv", "parquet")
    scipy = LazyModule("scipy", "sparse")
    sklearn = LazyModule("sklearn", "datasets")

# One place for the default: the setting's own (uploads are bounded even when a caller
# does not pass the bound).
DEFAULT_MAX_DATASET_BYTES: int = Settings.model_fields["max_dataset_bytes"].default


@dataclass(frozen=True)
class DataLimits:
    """The bounds on one dataset, and on the inline data kept on disk."""

    max_cells: int = Settings.model_fields["max_cells"].default
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES
    inline_max_bytes: int = Settings.model_fields["inline_max_bytes"].default
    max_expansion: float = Settings.model_fields["max_expansion"].default
    datasets_max_bytes: int = Settings.model_fields["datasets_max_bytes"].default
    max_sparse_features: int = Settings.model_fields["max_sparse_features"].default


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
) -> tuple[Any, np.ndarray | None]:
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
    readers = {
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


def import_dataset(
    path: Path,
    fmt: str,
    label_column: str | None,
    name: str | None,
    datasets_root: Path,
    max_cells: int,
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES,
) -> tuple[DatasetInfo, bool]:
    """Read an uploaded file and store it (in a compute worker); returns the info and
    whether the dataset is new."""
    upload = import_upload(
        path, fmt, label_column, name, datasets_root, max_cells, max_dataset_bytes
    )
    return upload.info, upload.created


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
    store = DatasetStore(datasets_root)
    if datasets_max_bytes is not None:
        store.check_room(X, y, datasets_max_bytes, notes.parts)
    parts = notes.parts
    info, created = store.put(
        X,
        y,
        name=None if private else name,
        format=fmt,
        feature_names=None if private else notes.feature_names,
        parts=parts.anonymous() if private and parts is not None else parts,
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


# -- tables: CSV and Parquet ------------------------------------------------------------

# Rows of a string column cast at once while looking for its first non-number.
_SLICE = 65_536
# The cells of a CSV read as missing (API.md: empty cells, NA, NaN).
NULL_VALUES = ("", "NA", "N/A", "NaN", "nan", "null", "NULL")


def _read_csv(
    path: Path, label_column: str | None, bounds: Bounds, notes: ReadNotes
) -> tuple[np.ndarray, np.ndarray | None]:
    if _blank(path):
        raise _no_rows()
    dialect = sniff(path)
    ragged: list[pyarrow.csv.InvalidRow] = []

    def on_invalid_row(row: pyarrow.csv.InvalidRow) -> str:
        ragged.append(row)
        return "error"

    def read(use_threads: bool, column_names: list[str] | None) -> pa.Table:
        return pyarrow.csv.read_csv(
            path,
            read_options=pyarrow.csv.ReadOptions(
                use_threads=use_threads, column_names=column_names
            ),
            parse_options=pyarrow.csv.ParseOptions(
                delimiter=dialect.delimiter, invalid_row_handler=on_invalid_row
            ),
            convert_options=pyarrow.csv.ConvertOptions(
                null_values=list(NULL_VALUES),
                strings_can_be_null=True,
                decimal_point=dialect.decimal_point,
            ),
        )

    def read_all(column_names: list[str] | None = None) -> pa.Table:
        try:
            try:
                return read(True, column_names)
            except pa.ArrowInvalid:
                if not ragged or ragged[0].number is not None:
                    raise
                # Threaded reading does not know row numbers: read again, in order, to name it.
                ragged.clear()
                return read(False, column_names)
        except pa.ArrowInvalid as exc:
            if ragged:
                raise _ragged(ragged[0], dialect) from None
            raise InvalidDataError(f"the CSV cannot be read: {exc}") from None

    table = read_all()
    line_offset = 2
    header = _numeric_header(table)
    if header is not None:
        # A file without a header: its first line is data, not names (pyarrow would have
        # taken it as names, and the first sample would be lost).
        names = [f"x{j}" for j in range(table.num_columns)]
        table = read_all(names)
        line_offset = 1
        notes.warnings.append(
            f"the CSV's first line ({header}) holds only numbers: it was read as the first "
            f"row of data, not as a header, and the columns are named x0 to x{len(names) - 1}"
            " (send a header line to name them)"
        )
    X, y, features = _table_arrays(
        table, label_column, bounds, line_offset=line_offset, notes=notes
    )
    notes.feature_names = None if header is not None else features
    return X, y


@dataclass(frozen=True)
class Dialect:
    """How a CSV writes its fields and its numbers."""

    delimiter: str = ","
    decimal_point: str = "."

    def describe(self) -> str:
        names = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "bars"}
        text = f"fields separated by {names[self.delimiter]}"
        return text + (", decimal commas" if self.decimal_point == "," else "")


DELIMITERS = (",", ";", "\t", "|")
# Lines looked at to choose the delimiter: the header and a few rows.
_SNIFF_LINES = 20
_DECIMAL_COMMA = re.compile(r"\d,\d")


def sniff(path: Path) -> Dialect:
    """The delimiter (``,`` ``;`` tab or ``|``) and decimal point of a CSV, from its first
    lines.

    The delimiter is the one that splits the header and every sampled row into the same
    number of fields, the most fields first (a comma by default, and where none agrees);
    quoted text is left out of the count. With ``;`` between the fields, numbers written
    with a decimal comma (``1,5``) are read as such, as spreadsheets in much of Europe
    write them.
    """
    with path.open("rb") as handle:
        head = handle.read(65_536)
    lines = [
        re.sub(r'"[^"]*"', "", line)
        for line in head.decode("utf-8", errors="replace").splitlines()[:_SNIFF_LINES]
        if line.strip()
    ]
    if len(head) == 65_536 and len(lines) > 1:
        lines.pop()  # cut short by the read
    best, most = ",", 0
    for delimiter in DELIMITERS:
        counts = {line.count(delimiter) for line in lines}
        if len(counts) == 1 and (found := counts.pop()) > most:
            best, most = delimiter, found
    decimal_comma = best == ";" and any(_DECIMAL_COMMA.search(line) for line in lines[1:])
    return Dialect(best, "," if decimal_comma else ".")


def _numeric_header(table: pa.Table) -> str | None:
    """The first line of a CSV, shortened, when it is numbers rather than column names.

    ``0,1,...,n-1`` is a header: pandas writes it for a DataFrame made from an array.
    """
    try:
        names = [name.strip() for name in table.column_names]
    except UnicodeDecodeError:
        return None
    if not names or not all(_is_number(name) for name in names):
        return None
    if names == [str(j) for j in range(len(names))]:
        return None
    line = ",".join(names)
    return repr(line if len(line) <= 40 else line[:37] + "...")


def _blank(path: Path) -> bool:
    """Whether a file holds nothing but white space (read no further than 64 KiB)."""
    with path.open("rb") as handle:
        head = handle.read(65_536)
    return len(head) < 65_536 and not head.strip()


def _ragged(row: pyarrow.csv.InvalidRow, dialect: Dialect) -> InvalidDataError:
    found, expected = row.actual_columns, row.expected_columns
    if row.number is None:
        where, loc = "a row", ["row"]
    else:
        # pyarrow counts records from 1, the header being the first.
        index = row.number - 2
        where, loc = f"row {index} (line {row.number})", ["row", index]
    return InvalidDataError(
        f"the CSV is ragged: {where} has {found} fields, the header has {expected} "
        f"(read with {dialect.describe()}; the delimiters ',', ';', tab and '|' are "
        "detected when the header and the first rows agree on one)",
        errors=[{"loc": loc, "msg": f"{found} fields, expected {expected}"}],
    )


def _read_parquet(
    path: Path, label_column: str | None, bounds: Bounds, notes: ReadNotes
) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        # Only the footer is read here: the schema and the sizes it declares.
        with pyarrow.parquet.ParquetFile(path) as footer:
            metadata, schema = footer.metadata, footer.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise InvalidDataError(f"not a readable Parquet file: {exc}") from None
    names = _column_names(schema, "Parquet file")
    _check_label_column(names, label_column)
    features = [n for n in names if n != label_column]
    if not features:
        raise InvalidDataError("the table has no feature columns besides the labels")
    for j, field in enumerate(schema):
        _check_parquet_column(field, j, is_label=field.name == label_column)
    n_samples = metadata.num_rows
    check_cells((n_samples, len(features)), bounds.max_cells)
    all_float32 = all(schema.field(n).type == pa.float32() for n in features)
    label_type = None if label_column is None else schema.field(label_column).type
    string_labels = label_type is not None and not _is_number_type(label_type)
    shape, itemsize = (n_samples, len(features)), 4 if all_float32 else 8
    numeric_labels = 8 * n_samples if label_column is not None and not string_labels else 0
    check_stored_bytes(shape, itemsize, numeric_labels, bounds.max_dataset_bytes)
    bounds.check_expansion(shape, itemsize, numeric_labels)
    # What the file says its pages hold once decompressed (decoding cannot take less).
    # Pages carry headers, levels and dictionaries beside the values: twice the stored
    # bound leaves room for those and still bounds what decompressing may allocate.
    declared = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if declared > 2 * bounds.max_dataset_bytes:
        raise PayloadTooLargeError(
            f"the Parquet file declares {_size(declared)} of uncompressed data, more than "
            f"twice the {_size(bounds.max_dataset_bytes)} a dataset may take "
            "(CLUSTERBENCH_MAX_DATASET_BYTES)"
        )
    try:
        # String labels are read as a dictionary: each distinct label decoded once.
        with pyarrow.parquet.ParquetFile(
            path, read_dictionary=[label_column] if string_labels else None
        ) as parquet:
            table = parquet.read()
    except (pa.ArrowException, OSError) as exc:
        raise InvalidDataError(f"not a readable Parquet file: {exc}") from None
    if table.num_rows != n_samples:
        raise InvalidDataError(
            f"the Parquet file declares {n_samples:,} rows but holds {table.num_rows:,}"
        )
    X, y, features = _table_arrays(table, label_column, bounds, line_offset=None, notes=notes)
    notes.feature_names = features
    return X, y


def _is_number_type(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


def _is_string_type(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _check_parquet_column(field: pa.Field, j: int, *, is_label: bool) -> None:
    """Refuse, from the schema alone, a column whose values cannot be features or labels."""
    kind = field.type
    value_kind = kind.value_type if pa.types.is_dictionary(kind) else kind
    if pa.types.is_nested(value_kind):
        raise InvalidDataError(
            f"column {field.name!r} (column {j}) is nested ({kind}): only flat columns "
            "are read, one number (or label) per row",
            errors=[{"loc": ["column", field.name], "msg": f"nested type {kind}"}],
        )
    if is_label:
        if not (_is_number_type(kind) or _is_string_type(kind)):
            raise InvalidDataError(
                f"label column {field.name!r} holds {kind} values; labels must be integers "
                "or strings",
                errors=[{"loc": ["column", field.name], "msg": f"type {kind} cannot be a label"}],
            )
    elif not (
        _is_number_type(kind)
        or pa.types.is_null(kind)
        or _is_string_type(kind)
        or pa.types.is_boolean(value_kind)
    ):
        raise InvalidDataError(
            f"column {field.name!r} (column {j}) holds {kind} values, neither numbers nor "
            "categories",
            errors=[{"loc": ["column", field.name], "msg": f"type {kind} is not a feature"}],
        )


def _column_names(schema: pa.Schema, what: str) -> list[str]:
    """The column names, each valid UTF-8 and none twice."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for j in range(len(schema)):
        try:
            name = schema.field(j).name
        except UnicodeDecodeError as exc:
            shown = repr(bytes(exc.object))[:40]
            raise InvalidDataError(
                f"the name of column {j} in the {what}'s header is not valid UTF-8 "
                f"({exc.reason} at byte {exc.start} of {shown})",
                errors=[{"loc": ["column", j], "msg": "column name is not valid UTF-8"}],
            ) from None
        if name in seen:
            raise InvalidDataError(
                f"the {what} has two columns named {name!r} (columns {seen[name]} and {j}); "
                "column names must be unique",
                errors=[{"loc": ["column", name], "msg": "duplicate column name"}],
            )
        seen[name] = j
        names.append(name)
    return names


def _check_label_column(names: list[str], label_column: str | None) -> None:
    if label_column is not None and label_column not in names:
        raise InvalidDataError(
            f"no column named {label_column!r} for the labels; the columns are "
            + ", ".join(repr(n) for n in names),
            errors=[{"loc": ["query", "label_column"], "msg": "no such column"}],
        )


def _table_arrays(
    table: pa.Table,
    label_column: str | None,
    bounds: Bounds,
    *,
    line_offset: int | None,
    notes: ReadNotes,
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """X, y and the names of X's columns."""
    names = _column_names(table.schema, "CSV" if line_offset else "Parquet file")
    _check_label_column(names, label_column)
    if table.num_rows == 0:
        raise _no_rows()
    features = [n for n in names if n != label_column]
    if len(features) > 1 and _is_row_index(table, features[0]):
        notes.warnings.append(
            f"the first column ({features[0]!r}) counts the rows 0 to {table.num_rows - 1}, "
            "as the index pandas' to_csv() writes does: it was dropped, not used as a "
            "feature (write the file with index=False to leave it out)"
        )
        features = features[1:]
    if not features:
        raise InvalidDataError("the table has no feature columns besides the labels")
    weight_column = notes.weight_column
    asked = notes.categorical | (frozenset() if weight_column is None else {weight_column})
    for name in sorted(asked):
        if name not in names:
            raise InvalidDataError(
                f"no column named {name!r}; the columns are " + ", ".join(map(repr, names)),
                errors=[{"loc": ["query", name], "msg": "no such column"}],
            )
    features = [n for n in features if n != weight_column]
    if not features:
        raise InvalidDataError("the table has no feature columns besides the labels")
    shape = (table.num_rows, len(features))
    check_cells(shape, bounds.max_cells)
    all_float32 = all(table.schema.field(n).type == pa.float32() for n in features)
    y_bytes = 0
    if label_column is not None:
        y_bytes = _label_column_bytes(table.column(label_column))
    check_stored_bytes(shape, 4 if all_float32 else 8, y_bytes, bounds.max_dataset_bytes)
    numeric: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    categories: list[list[str]] = []
    kinds: dict[str, Column] = {}
    for j, name in enumerate(features):
        column = table.column(name)
        found = _feature_column(column, name, j, line_offset, name in notes.categorical)
        if isinstance(found, np.ndarray):
            numeric.append(found)
            kinds[name] = Column(name, "numeric", int(np.isnan(found).sum()))
        else:
            codes.append(found[0])
            categories.append(found[1])
            kinds[name] = Column(name, "categorical", int((found[0] < 0).sum()))
            if label_column is None and name not in notes.categorical:
                notes.warnings.append(
                    f"column {name!r} holds no numbers: it is a categorical feature, one-hot "
                    f"encoded{_label_hint(name)}"
                )
    # One-hot encoding makes a column of many categories as many columns: a column of
    # 100,000 distinct strings was a 1 MB upload whose fit needed a dense 80 GB matrix.
    encoded = len(numeric) + sum(len(c) for c in categories)
    check_cells((table.num_rows, encoded), bounds.max_cells, what="one-hot encoded, the table has")
    dtype = np.float32 if numeric and all(c.dtype == np.float32 for c in numeric) else np.float64
    X = np.empty((table.num_rows, len(numeric)), dtype=dtype)
    for j, values in enumerate(numeric):
        X[:, j] = values
    if numeric:
        X = as_feature_matrix(X, allow_missing=True)
    y = None
    if label_column is not None:
        y = _label_column(table.column(label_column), label_column, line_offset)
        kinds[label_column] = Column(label_column, "label")
    weights = None
    if weight_column is not None:
        weights = _weight_column(table.column(weight_column), weight_column, line_offset)
        kinds[weight_column] = Column(weight_column, "weight")
    notes.parts = TableParts(
        columns=[kinds[n] for n in names if n in kinds],
        codes=np.stack(codes, axis=1).astype(np.int32) if codes else None,
        categories=categories or None,
        sample_weight=weights,
    )
    return X, (None if y is None else as_labels(y, X.shape[0])), features


def _feature_column(
    column: pa.ChunkedArray, name: str, j: int, line_offset: int | None, categorical: bool
) -> np.ndarray | tuple[np.ndarray, list[str]]:
    """A feature column as float64 numbers (NaN where missing), or as a categorical
    column's codes (int32, -1 where missing) and its sorted categories.

    By API.md's rule: numbers are numeric; strings are numeric when every present value
    parses as a number, categorical when none does, and a 422 naming the first odd cell
    when mixed; booleans and dictionaries are categorical, as are the columns of
    ``?categorical=``.
    """
    kind = column.type
    if categorical or pa.types.is_boolean(kind) or pa.types.is_dictionary(kind):
        return _categorical_column(column, name)
    if _is_string_type(kind):
        present = column.drop_null()
        found = _first_non_number(present)
        if found is None:
            column = pyarrow.compute.cast(column, pa.float64())
        else:
            first = _first_number(present)
            if first is not None:
                odd_row, odd = found if found[0] > first[0] else first
                rows = np.flatnonzero(column.is_valid().to_numpy(zero_copy_only=False))
                row = int(rows[odd_row])
                what = (
                    "numeric value" if odd is not None and _is_number(odd) else "non-numeric value"
                )
                raise InvalidDataError(
                    f"column {name!r} (column {j}) has a {what} {odd!r} at "
                    f"{_where(row, line_offset)}: the column mixes numbers and text (a typo? "
                    f"send ?categorical={name} to treat the column as categories)",
                    errors=[{"loc": ["row", row, name], "msg": f"mixed column: {odd!r}"}],
                )
            return _categorical_column(column, name)
    if _is_number_type(kind) or pa.types.is_null(kind):
        raw: np.ndarray = column.to_numpy(zero_copy_only=False)
        values = raw if raw.dtype == np.float32 else raw.astype(np.float64)
        infinite = np.isinf(values)
        if infinite.any():
            row = int(np.argmax(infinite))
            raise InvalidDataError(
                f"column {name!r} (column {j}) has infinity at {_where(row, line_offset)}: "
                "values must be finite",
                errors=[{"loc": ["row", row, name], "msg": "infinity is not allowed"}],
            )
        return values
    raise InvalidDataError(
        f"column {name!r} (column {j}) holds {kind} values, neither numbers nor categories",
        errors=[{"loc": ["column", name], "msg": f"type {kind} is not a feature"}],
    )


def _first_number(column: pa.ChunkedArray) -> tuple[int, str] | None:
    """The first (row, value) of a string column without nulls that parses as a number."""
    start = 0
    for chunk in column.chunks:
        for i, value in enumerate(chunk.to_pylist()):
            if _is_number(value):
                return start + i, value
        start += len(chunk)
    return None


def _categorical_column(column: pa.ChunkedArray, name: str) -> tuple[np.ndarray, list[str]]:
    """Codes (int32, -1 where missing) into the column's sorted distinct values."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = pyarrow.compute.cast(column, kind.value_type)
    if not _is_string_type(column.type):
        column = pyarrow.compute.cast(column, pa.string())
    try:
        distinct: list[str] = sorted(v for v in column.unique().to_pylist() if v is not None)
    except UnicodeDecodeError:
        raise InvalidDataError(
            f"column {name!r} holds a value that is not valid UTF-8",
            errors=[{"loc": ["column", name], "msg": "not valid UTF-8"}],
        ) from None
    index = pyarrow.compute.index_in(column, value_set=pa.array(distinct, pa.string()))
    codes = np.asarray(index.to_numpy(zero_copy_only=False), dtype=np.float64)
    return np.where(np.isnan(codes), -1, codes).astype(np.int32), distinct


def _weight_column(column: pa.ChunkedArray, name: str, line_offset: int | None) -> np.ndarray:
    """``sample_weight``: numbers, none missing, none negative, not all zero."""
    if not _is_number_type(column.type):
        raise InvalidDataError(
            f"weight column {name!r} holds {column.type} values; weights are numbers",
            errors=[{"loc": ["query", "weight_column"], "msg": "not numeric"}],
        )
    if column.null_count:
        row = _first_null(column)
        raise InvalidDataError(
            f"weight column {name!r} has a missing weight at {_where(row, line_offset)}",
            errors=[{"loc": ["row", row, name], "msg": "missing weight"}],
        )
    weights: np.ndarray = np.asarray(column.to_numpy(), dtype=np.float64)
    bad = ~np.isfinite(weights) | (weights < 0)
    if bad.any():
        row = int(np.argmax(bad))
        raise InvalidDataError(
            f"weight column {name!r} has {weights[row]:g} at {_where(row, line_offset)}: "
            "weights must be finite and at least 0",
            errors=[{"loc": ["row", row, name], "msg": "weight must be finite and >= 0"}],
        )
    if not weights.sum() > 0:
        raise InvalidDataError(
            f"weight column {name!r} is all zeros: at least one row must weigh more",
            errors=[{"loc": ["column", name], "msg": "all weights are zero"}],
        )
    return weights


# The names pandas gives its index when it writes one: to_csv() leaves it unnamed (read
# back as "" or "Unnamed: 0"), to_parquet() names a non-default one __index_level_0__.
_INDEX_NAMES = frozenset({"", "Unnamed: 0", "__index_level_0__"})


def _is_row_index(table: pa.Table, name: str) -> bool:
    """Whether column ``name`` is an unnamed 0, 1, ..., n-1: a row index, not a feature."""
    if name.strip() not in _INDEX_NAMES:
        return False
    column = table.column(name)
    if not pa.types.is_integer(column.type) or column.null_count:
        return False
    return bool(np.array_equal(column.to_numpy(), np.arange(len(column))))


def _label_column_bytes(column: pa.ChunkedArray) -> int:
    """Bytes the labels take once stored: 8 per integer, 4 per character of the
    longest string for every string."""
    if not _is_string_type(column.type):
        return 8 * len(column)
    longest = 0
    for chunk in column.chunks:
        values = chunk.dictionary if pa.types.is_dictionary(chunk.type) else chunk
        if len(values):
            found = pyarrow.compute.max(pyarrow.compute.utf8_length(values)).as_py()
            longest = max(longest, found or 0)
    return 4 * longest * len(column)


def _where(row: int, line_offset: int | None) -> str:
    return f"row {row}" + (f" (line {row + line_offset})" if line_offset else "")


def _label_hint(name: str) -> str:
    """What to send when column ``name`` holds the labels rather than a feature."""
    return (
        f"; if column {name!r} holds the labels, upload with "
        f"?label_column={urllib.parse.quote(name, safe='')}"
    )


def _first_non_number(column: pa.ChunkedArray) -> tuple[int, str | None] | None:
    """The first (row, value) of a string column that is missing or not a number.

    Slices that Arrow casts to numbers whole are skipped; only the slice holding the
    culprit becomes Python strings (a whole column of them could take gigabytes).
    """
    start = 0
    for chunk in column.chunks:
        for offset in range(0, len(chunk), _SLICE):
            part = chunk.slice(offset, _SLICE)
            if not part.null_count:
                try:
                    pyarrow.compute.cast(part, pa.float64())
                    continue
                except pa.ArrowInvalid:
                    pass
            for i, value in enumerate(part.to_pylist()):
                if value is None or not _is_number(value):
                    return start + offset + i, value
        start += len(chunk)
    return None


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
    if _is_string_type(kind):
        return _string_labels(column, name)
    raise InvalidDataError(
        f"label column {name!r} holds {kind} values; labels must be integers or strings",
        errors=[{"loc": ["column", name], "msg": f"type {kind} cannot be a label"}],
    )


def _string_labels(column: pa.ChunkedArray, name: str) -> np.ndarray:
    """String labels as a unicode array, each distinct label turned into Python once."""
    if not pa.types.is_dictionary(column.type):
        column = pyarrow.compute.dictionary_encode(column)
    column = column.unify_dictionaries()
    if not column.num_chunks:
        return np.asarray([], dtype=str)
    try:
        distinct = np.asarray(column.chunk(0).dictionary.to_pylist(), dtype=str)
    except UnicodeDecodeError:
        raise InvalidDataError(
            f"label column {name!r} holds a label that is not valid UTF-8",
            errors=[{"loc": ["column", name], "msg": "label is not valid UTF-8"}],
        ) from None
    indices = np.concatenate(
        [chunk.indices.to_numpy(zero_copy_only=False) for chunk in column.chunks]
    )
    labels: np.ndarray = distinct[indices]
    return labels


def _no_rows() -> InvalidDataError:
    return InvalidDataError(
        "the file has no data rows; at least 2 samples are needed",
        errors=[{"loc": ["row"], "msg": "no rows"}],
    )


# -- NumPy files --------------------------------------------------------------------------


@dataclass(frozen=True)
class _NpyHeader:
    """What an .npy header declares, read before any value."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    size: int  # bytes of the magic string and header: the values start here

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _npy_header(stream: IO[bytes], what: str) -> _NpyHeader:
    """Read and check the header of an .npy stream (at its start); the values stay unread."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise InvalidDataError(
                f"{what} is in .npy format version {version[0]}.{version[1]}; "
                "versions 1.0 and 2.0 are read",
                errors=[{"loc": [_member(what)], "msg": "unsupported .npy version"}],
            )
        size = stream.tell()
    except (ValueError, TypeError, EOFError, OSError) as exc:
        raise InvalidDataError(f"{what} is not a readable .npy array: {exc}") from None
    if dtype.hasobject:
        raise InvalidDataError(
            f"{what} holds Python objects; only numeric arrays are accepted and nothing "
            "is ever unpickled",
            errors=[{"loc": [_member(what)], "msg": f"dtype {dtype} holds objects"}],
        )
    if any(n < 0 for n in shape):
        raise InvalidDataError(
            f"{what} declares a negative dimension: shape {shape}",
            errors=[{"loc": [_member(what)], "msg": "negative dimension"}],
        )
    return _NpyHeader(shape=tuple(shape), dtype=dtype, size=size)


def _member(what: str) -> str:
    return "y" if what.startswith("'y'") else "X"


def _check_features_header(header: _NpyHeader, what: str, bounds: Bounds) -> None:
    dtype = header.dtype
    if dtype.kind not in "iuf" or dtype.names is not None or dtype.subdtype is not None:
        raise InvalidDataError(
            f"{what} holds {dtype} values; it must hold integers or floats",
            errors=[{"loc": ["X"], "msg": f"dtype {dtype} is not numeric"}],
        )
    if len(header.shape) != 2:
        raise InvalidDataError(
            f"X must be 2-dimensional (n_samples, n_features); {what} has shape {header.shape}",
            errors=[{"loc": ["X"], "msg": f"expected 2 dimensions, got {len(header.shape)}"}],
        )
    check_cells(header.shape, bounds.max_cells, what=f"{what} declares")


def _check_size(header: _NpyHeader, what: str, size: int) -> None:
    """The values an .npy header declares must be exactly the bytes that follow it."""
    declared = header.size + header.nbytes
    if size != declared:
        raise InvalidDataError(
            f"{what} is {size:,} bytes long but its header (shape {header.shape}, "
            f"{header.dtype}) declares {declared:,}",
            errors=[{"loc": [_member(what)], "msg": "size does not match its header"}],
        )


def _read_npy(
    path: Path, label_column: str | None, bounds: Bounds, notes: ReadNotes
) -> tuple[np.ndarray, np.ndarray | None]:
    what = "the .npy file"
    with path.open("rb") as handle:
        header = _npy_header(handle, what)
    _check_features_header(header, what, bounds)
    _check_size(header, what, path.stat().st_size)
    check_stored_bytes(header.shape, _stored_itemsize(header.dtype), 0, bounds.max_dataset_bytes)
    try:
        # Memory-mapped: the values are read when validated.
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidDataError(f"not a readable .npy file: {exc}") from None
    X = as_feature_matrix(X, allow_missing=True)
    notes.parts = _numeric_parts(X)
    return X, None


def _stored_itemsize(dtype: np.dtype[Any]) -> int:
    return 4 if dtype == np.float32 else 8


def _read_npz(
    path: Path, label_column: str | None, bounds: Bounds, notes: ReadNotes
) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with zipfile.ZipFile(path) as archive:
            if _is_save_npz(archive):
                return _read_scipy_sparse(path, label_column, bounds, notes)
            members = {_array_name(info.filename): info for info in archive.infolist()}
            if "X" not in members:
                raise InvalidDataError(
                    "the .npz must hold an array named 'X' (and optionally 'y'); it holds "
                    + (", ".join(repr(f) for f in members) or "nothing"),
                    errors=[{"loc": ["X"], "msg": "missing"}],
                )
            X_header = _member_header(archive, members["X"], "'X' in the .npz")
            _check_features_header(X_header, "'X' in the .npz", bounds)
            n_samples = X_header.shape[0]
            y_header = None
            if "y" in members:
                y_header = _member_header(archive, members["y"], "'y' in the .npz")
                _check_y_header(y_header, n_samples)
            y_bytes = 0
            if y_header is not None:
                y_bytes = y_header.nbytes if y_header.dtype.kind == "U" else 8 * y_header.shape[0]
            check_stored_bytes(
                X_header.shape,
                _stored_itemsize(X_header.dtype),
                y_bytes,
                bounds.max_dataset_bytes,
            )
            bounds.check_expansion(X_header.shape, _stored_itemsize(X_header.dtype), y_bytes)
            # The zip directory's uncompressed size bounds what inflating can produce: it
            # must be what the header declares, nothing more.
            _check_size(X_header, "'X' in the .npz", members["X"].file_size)
            if y_header is not None:
                _check_size(y_header, "'y' in the .npz", members["y"].file_size)
            # Every size is now known to be within the bounds: only now are values read.
            X = _read_member(archive, members["X"])
            y = None if y_header is None else _read_member(archive, members["y"])
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise InvalidDataError(f"not a readable .npz file: {exc}") from None
    X = as_feature_matrix(X, allow_missing=True)
    notes.parts = _numeric_parts(X)
    return X, (None if y is None else as_labels(y, X.shape[0]))


# -- sparse data ----------------------------------------------------------------------------

# The members scipy.sparse.save_npz writes for a CSR or CSC matrix.
SAVE_NPZ_MEMBERS = frozenset({"format", "shape", "data", "indices", "indptr"})
# Bytes per column index and row pointer as stored: int32 while the values fit.
_INDEX = np.dtype(np.int32)


def _is_save_npz(archive: zipfile.ZipFile) -> bool:
    """Whether a zip holds what scipy.sparse.save_npz writes (no 'X' member)."""
    names = {_array_name(info.filename) for info in archive.infolist()}
    return "X" not in names and {"format", "shape"} <= names


def _read_scipy_sparse(
    path: Path, label_column: str | None, bounds: Bounds, notes: ReadNotes
) -> tuple[Any, np.ndarray | None]:
    """A ``scipy.sparse.save_npz`` file (CSR, or CSC converted) as a canonical CSR
    matrix. Every member's header is checked against the zip directory and the bounds,
    and the shape it declares against the arrays, before a value is decoded."""
    what = "the save_npz file"
    try:
        with zipfile.ZipFile(path) as archive:
            members = {_array_name(info.filename): info for info in archive.infolist()}
            if set(members) != SAVE_NPZ_MEMBERS:
                found = ", ".join(map(repr, sorted(members))) or "nothing"
                raise InvalidDataError(
                    f"{what} must hold the members scipy.sparse.save_npz writes for a CSR or "
                    f"CSC matrix (format, shape, data, indices, indptr); it holds {found}",
                    errors=[{"loc": ["file"], "msg": "not a save_npz CSR or CSC matrix"}],
                )
            headers = {}
            for name, info in members.items():
                header = _member_header(archive, info, f"{name!r} in {what}")
                # Inflating can produce no more than the zip directory says: exactly the
                # header's declared bytes, counted before anything is decoded.
                _check_size(header, f"{name!r} in {what}", info.file_size)
                headers[name] = header
            for name in ("format", "shape"):
                if headers[name].nbytes > 64:
                    raise _sparse_error(f"{name!r} in {what} declares {headers[name].shape}")
            kind = _read_member(archive, members["format"])
            shape = _read_member(archive, members["shape"])
            layout = kind.item().decode() if kind.dtype.kind == "S" else str(kind.item())
            if layout not in ("csr", "csc") or kind.shape != ():
                raise _sparse_error(
                    f"{what} holds a {layout!r} matrix; CSR and CSC are read (convert with "
                    ".tocsr() before save_npz)",
                    loc="format",
                )
            if shape.dtype.kind not in "iu" or shape.shape != (2,) or (shape < 0).any():
                raise _sparse_error(f"'shape' in {what} is {shape.tolist()!r}", loc="shape")
            n_samples, n_features = (int(n) for n in shape)
            n_major = n_samples if layout == "csr" else n_features
            data, indices, indptr = headers["data"], headers["indices"], headers["indptr"]
            if data.dtype.kind not in "iuf" or len(data.shape) != 1:
                raise _sparse_error(
                    f"'data' in {what} holds {data.dtype} values of shape {data.shape}; "
                    "a 1-dimensional array of numbers is read",
                    loc="data",
                )
            nnz = data.shape[0]
            for name, header, length in (
                ("indices", indices, nnz),
                ("indptr", indptr, n_major + 1),
            ):
                if header.dtype.kind not in "iu" or header.shape != (length,):
                    raise _sparse_error(
                        f"'{name}' in {what} holds {header.dtype} values of shape "
                        f"{header.shape}; the declared shape ({n_samples:,} x {n_features:,}, "
                        f"{layout}) with {nnz:,} values needs {length:,} integers",
                        loc=name,
                    )
            itemsize = _stored_itemsize(data.dtype)
            check_sparse_size((n_samples, n_features), nnz, itemsize, _INDEX.itemsize, 0, bounds)
            # Every size is now known to be within the bounds: only now are values read.
            values = _read_member(archive, members["data"])
            minor = _read_member(archive, members["indices"])
            pointers = _read_member(archive, members["indptr"])
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise InvalidDataError(f"not a readable save_npz file: {exc}") from None
    _check_compressed(pointers, minor, n_features if layout == "csr" else n_samples)
    matrix_type = scipy.sparse.csr_matrix if layout == "csr" else scipy.sparse.csc_matrix
    dtype = np.float32 if values.dtype == np.float32 else np.float64
    try:
        X = matrix_type(
            (values.astype(dtype, copy=False), minor, pointers), shape=(n_samples, n_features)
        ).tocsr()
    except ValueError as exc:  # what SciPy's own check finds that the ones above did not
        raise InvalidDataError(f"{what} does not hold a valid matrix: {exc}") from None
    notes.format = "scipy-sparse"
    return _canonical(X), None


def _check_compressed(indptr: np.ndarray, indices: np.ndarray, n_minor: int) -> None:
    """The row pointers and column indices of a CSR matrix of ``n_minor`` columns (a CSC
    matrix's transposed) must agree with its declared shape."""
    nnz = len(indices)
    if indptr[0] != 0 or indptr[-1] != nnz:
        raise _sparse_error(
            f"'indptr' runs from {int(indptr[0]):,} to {int(indptr[-1]):,}; it must run from 0 "
            f"to the number of stored values, {nnz:,}",
            loc="indptr",
        )
    steps = np.diff(indptr.astype(np.int64))
    if (steps < 0).any():
        k = int(np.argmax(steps < 0))
        raise _sparse_error(
            f"'indptr' decreases at {k + 1} ({int(indptr[k]):,} then {int(indptr[k + 1]):,}): "
            "row pointers never decrease",
            loc=["indptr", k + 1],
        )
    bad = (indices < 0) | (indices >= n_minor)
    if bad.any():
        k = int(np.argmax(bad))
        row = int(np.searchsorted(indptr, k, side="right")) - 1
        raise _sparse_error(
            f"'indices'[{k}] is {int(indices[k]):,} (row {row}), outside the declared "
            f"{n_minor:,} columns",
            loc=["indices", k],
        )


def _sparse_error(message: str, *, loc: str | list[Any] = "file") -> InvalidDataError:
    path = loc if isinstance(loc, list) else [loc]
    return InvalidDataError(message, errors=[{"loc": path, "msg": message}])


def _canonical(X: Any) -> Any:
    """A CSR matrix in one form per matrix: sorted indices, duplicates summed, explicit
    zeros dropped, int32 indices while they fit; its values finite, at least 2 rows."""
    X.sum_duplicates()
    X.eliminate_zeros()
    n_samples, n_features = X.shape
    if n_samples < 2:
        raise InvalidDataError(
            f"X must have at least 2 samples; got {n_samples}",
            errors=[{"loc": ["X"], "msg": f"{n_samples} sample(s), 2 needed"}],
        )
    if n_features < 1:
        raise InvalidDataError(
            "X must have at least 1 feature", errors=[{"loc": ["X"], "msg": "no features"}]
        )
    bad = ~np.isfinite(X.data)
    if bad.any():
        k = int(np.argmax(bad))
        row = int(np.searchsorted(X.indptr, k, side="right")) - 1
        col = int(X.indices[k])
        kind = "NaN" if np.isnan(X.data[k]) else "infinity"
        raise InvalidDataError(
            f"X[{row}][{col}] is {kind} (row {row}, column {col}): values must be finite",
            errors=[{"loc": ["X", row, col], "msg": f"{kind} is not allowed"}],
        )
    if max(X.nnz, n_features) < np.iinfo(_INDEX).max:
        X.indices = X.indices.astype(_INDEX, copy=False)
        X.indptr = X.indptr.astype(_INDEX, copy=False)
    X.has_canonical_format = True
    return X


def _read_libsvm(
    path: Path, label_column: str | None, bounds: Bounds, notes: ReadNotes
) -> tuple[Any, np.ndarray | None]:
    """svmlight / libsvm text as ``sklearn.datasets.load_svmlight_file`` reads it
    (``zero_based="auto"``): a CSR matrix and its targets as labels.

    Before parsing, the stored size is bounded from the bytes: each value stored has its
    ``:`` in the text, each row its line. A line the parser refuses is found and named.
    """
    if _blank(path):
        raise _no_rows()
    values, rows = 0, 1
    with path.open("rb") as handle:
        # A part at a time: the text is never held whole before it is known to fit.
        tail = b""
        while part := handle.read(1 << 24):
            qid = (tail + part).find(b"qid:")
            if qid >= 0:
                line = rows + (tail + part).count(b"\n", len(tail), qid)
                raise InvalidDataError(
                    f"line {line} has a qid (a ranking query id): ranking files are not "
                    "read; send the lines without their qid:<n> fields",
                    errors=[{"loc": ["line", line], "msg": "qid is not supported"}],
                )
            values += part.count(b":")
            rows += part.count(b"\n")
            tail = part[-3:]
    # An upper bound (a comment may hold a colon), 8-byte values and labels.
    check_cells((values,), bounds.max_cells, what="the libsvm text may store")
    stored = values * (8 + _INDEX.itemsize) + rows * (8 + _INDEX.itemsize)
    if stored > bounds.max_dataset_bytes:
        raise PayloadTooLargeError(
            f"the libsvm text holds {values:,} index:value pairs on {rows:,} lines, "
            f"{_size(stored)} once stored; the limit is {_size(bounds.max_dataset_bytes)} "
            "(CLUSTERBENCH_MAX_DATASET_BYTES)"
        )
    try:
        X, targets = sklearn.datasets.load_svmlight_file(
            str(path), zero_based="auto", dtype=np.float64
        )
    except (ValueError, OverflowError, TypeError) as exc:
        raise _libsvm_culprit(path) or InvalidDataError(
            f"the libsvm text cannot be read: {exc}"
        ) from None
    if X.shape[1] > bounds.max_sparse_features:
        check_sparse_size(X.shape, X.nnz, 8, _INDEX.itemsize, 0, bounds)
    X = _canonical(X)
    try:
        y = as_labels(targets, X.shape[0])
    except InvalidDataError:
        row = int(np.argmax(~np.isfinite(targets) | (targets != np.round(targets))))
        raise InvalidDataError(
            f"the target of row {row} is {targets[row]!r}: targets are read as labels and "
            "must be integers",
            errors=[{"loc": ["row", row, "target"], "msg": "non-integer target"}],
        ) from None
    return X, y


def _libsvm_culprit(path: Path) -> InvalidDataError | None:
    """The first line of a libsvm file the parser refused, named with what is wrong."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.split(b"#", 1)[0].split()
            if not line:
                continue
            problem = _libsvm_line_problem(line)
            if problem is not None:
                token, why = problem
                shown = repr(token.decode("utf-8", "replace")[:40])
                return InvalidDataError(
                    f"line {number} of the libsvm text: {shown} {why}",
                    errors=[{"loc": ["line", number], "msg": f"{shown} {why}"}],
                )
    return None


def _libsvm_line_problem(tokens: list[bytes]) -> tuple[bytes, str] | None:
    """What is wrong with a libsvm line's tokens (the target, then index:value pairs)."""
    if not _is_number(tokens[0].decode("utf-8", "replace")):
        return tokens[0], "is not a target: a line starts with a number (its label)"
    previous = -1
    for token in tokens[1:]:
        index, colon, value = token.partition(b":")
        if not colon:
            return token, "is not an index:value pair"
        if not index.strip(b"+-").isdigit():
            return token, "has an index that is not an integer"
        position = int(index)
        if position < 0:
            return token, "has a negative index"
        if position <= previous:
            return token, "has an index not greater than the one before: indices increase"
        if not _is_number(value.decode("utf-8", "replace")):
            return token, "has a value that is not a number"
        previous = position
    return None


def _numeric_parts(X: np.ndarray) -> TableParts:
    """The columns of a matrix of numbers, x0, x1, ..., with their missing (NaN) counts."""
    missing = np.isnan(X).sum(axis=0) if X.dtype.kind == "f" else np.zeros(X.shape[1], int)
    return TableParts(
        columns=[Column(f"x{j}", "numeric", int(n)) for j, n in enumerate(missing.tolist())]
    )


def _array_name(filename: str) -> str:
    # np.savez names its members "<name>.npy"; np.load's NpzFile drops the suffix.
    return filename.removesuffix(".npy")


def _member_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> _NpyHeader:
    if info.flag_bits & 0x1:
        raise InvalidDataError(
            f"{what} is encrypted",
            errors=[{"loc": [_member(what)], "msg": "encrypted"}],
        )
    try:
        with archive.open(info) as stream:
            header = _npy_header(stream, what)
    except NotImplementedError as exc:  # a compression method zipfile does not know
        raise InvalidDataError(f"{what} cannot be read: {exc}") from None
    return header


def _check_y_header(header: _NpyHeader, n_samples: int) -> None:
    dtype = header.dtype
    if dtype.kind not in "iuUf" or dtype.names is not None or dtype.subdtype is not None:
        raise InvalidDataError(
            f"'y' in the .npz holds {dtype} values; labels must be integers or strings",
            errors=[{"loc": ["y"], "msg": f"unsupported dtype {dtype}"}],
        )
    if len(header.shape) != 1:
        raise InvalidDataError(
            f"y must be 1-dimensional; 'y' in the .npz has shape {header.shape}",
            errors=[{"loc": ["y"], "msg": f"expected 1 dimension, got {len(header.shape)}"}],
        )
    if header.shape[0] != n_samples:
        raise InvalidDataError(
            f"y has {header.shape[0]} labels but X has {n_samples} samples",
            errors=[{"loc": ["y"], "msg": f"{header.shape[0]} labels, expected {n_samples}"}],
        )


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with archive.open(info) as stream:
        array: np.ndarray = np.lib.format.read_array(stream, allow_pickle=False)
    return array


# -- JSON -----------------------------------------------------------------------------------


def _read_json(
    path: Path, label_column: str | None, bounds: Bounds, notes: ReadNotes
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
    rows = document["X"]
    if isinstance(rows, list) and rows and isinstance(rows[0], list):
        check_cells((len(rows), len(rows[0])), bounds.max_cells)
        if any(not _NUMBERS.issuperset(map(type, row)) for row in rows if isinstance(row, list)):
            # Strings, booleans or nulls: a table, read by the rule CSV columns follow.
            X, _, _ = _table_arrays(_json_table(rows), None, bounds, line_offset=None, notes=notes)
            rows = None
    X = as_feature_matrix(rows, allow_missing=True) if rows is not None else X
    if notes.parts is None:
        notes.parts = _numeric_parts(X)
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
    check_stored_bytes(X.shape, X.dtype.itemsize, label_bytes(y), bounds.max_dataset_bytes)
    return X, as_labels(y, X.shape[0])


_NUMBERS = frozenset({int, float})


def _json_table(rows: list[Any]) -> pa.Table:
    """JSON rows holding strings, booleans or nulls as a table of columns x0, x1, ...:
    each column numbers, strings or booleans (with nulls), or a 422 naming the first cell
    that mixes them."""
    width = len(rows[0])
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise InvalidDataError(
                f"X[{i}] is not an array of {width} values, as row 0 is",
                errors=[{"loc": ["X", i], "msg": f"expected {width} values"}],
            )
    columns = {}
    for j in range(width):
        values = [row[j] for row in rows]
        kinds = {_json_kind(v) for v in values} - {None}
        if len(kinds) > 1:
            first = _json_kind(next(v for v in values if v is not None))
            i = next(i for i, v in enumerate(values) if _json_kind(v) not in (None, first))
            raise InvalidDataError(
                f"X[{i}][{j}] is {values[i]!r}, but column {j} holds {first} values "
                "(a column is numbers, strings or booleans, with nulls where missing)",
                errors=[{"loc": ["X", i, j], "msg": f"mixed column: {values[i]!r}"}],
            )
        kind = str(kinds.pop()) if kinds else "number"
        if kind == "number":
            values = [None if v is None else float(v) for v in values]
        columns[f"x{j}"] = pa.array(values, type=_JSON_TYPES[kind]())
    return pa.table(columns)


# Called when a table is built: pyarrow loads in the data workers only.
_JSON_TYPES = {
    "number": lambda: pa.float64(),
    "string": lambda: pa.string(),
    "boolean": lambda: pa.bool_(),
}


def _json_kind(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) in _NUMBERS:
        return "number"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    raise InvalidDataError(
        f"X holds {value!r}: a cell is a number, a string, a boolean or null",
        errors=[{"loc": ["X"], "msg": f"unsupported value {value!r}"}],
    )
