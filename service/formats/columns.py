"""A table's columns (from CSV, Parquet or JSON) to the feature matrix, the labels, the
weights and the categorical codes: each column's kind found by the documented rule, and
each problem named by its column and row."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable

import numpy as np

from service.datasets import as_feature_matrix, as_labels
from service.errors import InvalidDataError
from service.formats.libs import pa, pyarrow
from service.formats.limits import Bounds, ReadNotes, check_cells, check_stored_bytes
from service.tables import Column, TableParts

# Rows of a string column cast at once while looking for its first non-number.
_SLICE = 65_536


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
        _refuse_first(
            np.isinf(values),
            name,
            line_offset,
            "infinity is not allowed",
            lambda _, where: (
                f"column {name!r} (column {j}) has infinity at {where}: values must be finite"
            ),
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
    _refuse_first(
        ~np.isfinite(weights) | (weights < 0),
        name,
        line_offset,
        "weight must be finite and >= 0",
        lambda row, where: (
            f"weight column {name!r} has {weights[row]:g} at {where}: "
            "weights must be finite and at least 0"
        ),
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


def _refuse_first(
    bad: np.ndarray,
    name: str,
    line_offset: int | None,
    msg: str,
    detail: Callable[[int, str], str],
) -> None:
    """422 at the first row ``bad`` flags in column ``name``, if any: ``detail(row,
    where)`` says what is there (``where`` names the row, and its line in a CSV file),
    ``msg`` is its error's."""
    if bad.any():
        row = int(np.argmax(bad))
        raise InvalidDataError(
            detail(row, _where(row, line_offset)),
            errors=[{"loc": ["row", row, name], "msg": msg}],
        )


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


def _numeric_parts(X: np.ndarray) -> TableParts:
    """The columns of a matrix of numbers, x0, x1, ..., with their missing (NaN) counts."""
    missing = np.isnan(X).sum(axis=0) if X.dtype.kind == "f" else np.zeros(X.shape[1], int)
    return TableParts(
        columns=[Column(f"x{j}", "numeric", int(n)) for j, n in enumerate(missing.tolist())]
    )
