"""JSON uploads: an array of rows (numbers) or of objects keyed by column name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from service.datasets import as_feature_matrix, as_labels
from service.errors import InvalidDataError
from service.formats.columns import _numeric_parts, _table_arrays
from service.formats.libs import pa
from service.formats.limits import (
    Arrays,
    Bounds,
    ReadNotes,
    check_cells,
    check_stored_bytes,
    label_bytes,
)

# -- JSON -----------------------------------------------------------------------------------


def _read_json(path: Path, label_column: str | None, bounds: Bounds, notes: ReadNotes) -> Arrays:
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
