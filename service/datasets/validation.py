"""Client-sent data to validated arrays: a finite feature matrix of numbers and its
labels, each problem named by where it is."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.errors import (
    InvalidDataError,
)


def as_feature_matrix(X: Any, *, min_samples: int = 2, allow_missing: bool = False) -> np.ndarray:
    """Validate client data as a feature matrix.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Nested sequences of numbers, or an array.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        C-contiguous float64, or float32 when given float32.

    Raises
    ------
    InvalidDataError
        Ragged rows, non-numeric or non-finite values, fewer than 2 samples or no
        features; the message names the row and column. With ``allow_missing``, NaN
        is a missing value (an upload keeps it as such) and only infinity is refused.
    """
    if not isinstance(X, np.ndarray):
        X = _rows_to_array(X)
    if X.ndim != 2:
        raise InvalidDataError(
            f"X must be 2-dimensional (n_samples, n_features); got {X.ndim} dimension(s)",
            errors=[{"loc": ["X"], "msg": f"expected 2 dimensions, got {X.ndim}"}],
        )
    if X.dtype.kind not in "biuf":
        raise InvalidDataError(
            f"X must hold numbers; got values of type {X.dtype}",
            errors=[{"loc": ["X"], "msg": f"non-numeric dtype {X.dtype}"}],
        )
    dtype = np.float32 if X.dtype == np.float32 else np.float64
    X_valid: np.ndarray = np.ascontiguousarray(X, dtype=dtype)
    n_samples, n_features = X_valid.shape
    if n_samples < min_samples:
        raise InvalidDataError(
            f"X must have at least {min_samples} samples; got {n_samples}",
            errors=[{"loc": ["X"], "msg": f"{n_samples} sample(s), {min_samples} needed"}],
        )
    if n_features < 1:
        raise InvalidDataError(
            "X must have at least 1 feature; its rows are empty",
            errors=[{"loc": ["X", 0], "msg": "empty row"}],
        )
    _check_finite(X_valid, allow_missing=allow_missing)
    return X_valid


def _rows_to_array(rows: Any) -> np.ndarray:
    """Nested JSON lists to float64, naming the first row or cell that is not a number.

    One pass of type checks per row (``set(map(type, row))`` runs at C speed) catches
    strings, booleans, nulls and nesting before NumPy converts the whole at once.
    """
    if not isinstance(rows, list):
        raise InvalidDataError(
            "X must be an array of rows, each an array of numbers",
            errors=[{"loc": ["X"], "msg": "not an array of arrays"}],
        )
    if not rows:
        raise InvalidDataError("X has no rows", errors=[{"loc": ["X"], "msg": "no rows"}])
    width = len(rows[0]) if isinstance(rows[0], list) else 0
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise InvalidDataError(
                f"X[{i}] is not an array of numbers: every row of X must be one",
                errors=[{"loc": ["X", i], "msg": "not an array"}],
            )
        if len(row) != width:
            raise InvalidDataError(
                f"X is ragged: row {i} has {_values(len(row))}, row 0 has {_values(width)}",
                errors=[{"loc": ["X", i], "msg": f"{_values(len(row))}, expected {width}"}],
            )
        if not _NUMBER_TYPES.issuperset(map(type, row)):
            j, value = next((j, v) for j, v in enumerate(row) if type(v) not in _NUMBER_TYPES)
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise InvalidDataError(
                f"X[{i}][{j}] is not a number: {shown} (row {i}, column {j})",
                errors=[{"loc": ["X", i, j], "msg": f"not a number: {shown}"}],
            )
    try:
        array: np.ndarray = np.array(rows, dtype=np.float64)
    except OverflowError:
        raise InvalidDataError(
            "X holds an integer too large for a 64-bit float",
            errors=[{"loc": ["X"], "msg": "integer out of float64 range"}],
        ) from None
    return array


# Exact types: bool is a subclass of int, but true and false are not numbers here.
_NUMBER_TYPES = frozenset({float, int})


def _values(n: int) -> str:
    return f"{n} value" if n == 1 else f"{n} values"


def _check_finite(X: np.ndarray, *, allow_missing: bool = False) -> None:
    # np.isfinite on the sum is a fast path: one pass, no boolean mask for clean data.
    with np.errstate(over="ignore", invalid="ignore"):  # finite values may sum past 1e308
        total = X.sum(dtype=np.float64)
    if np.isfinite(total):
        return
    bad = np.argwhere(np.isinf(X) if allow_missing else ~np.isfinite(X))
    if len(bad) == 0:  # the sum overflowed, the values are finite
        return
    row, col = (int(v) for v in bad[0])
    value = X[row, col]
    kind = "NaN" if np.isnan(value) else "infinity"
    raise InvalidDataError(
        f"X[{row}][{col}] is {kind} (row {row}, column {col}): values must be finite"
        + (f"; {len(bad) - 1} more non-finite value(s) follow" if len(bad) > 1 else ""),
        errors=[{"loc": ["X", row, col], "msg": f"{kind} is not allowed"}],
    )


def as_labels(y: Any, n_samples: int) -> np.ndarray:
    """Validate ground-truth labels.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Integer or string labels.
    n_samples : int
        Number of rows of the matching X.

    Returns
    -------
    y : ndarray of shape (n_samples,)
        int64 or unicode strings (never an object array).
    """
    y_arr = np.asarray(y)
    if y_arr.ndim != 1:
        raise InvalidDataError(
            f"y must be 1-dimensional; got {y_arr.ndim} dimension(s)",
            errors=[{"loc": ["y"], "msg": f"expected 1 dimension, got {y_arr.ndim}"}],
        )
    if len(y_arr) != n_samples:
        raise InvalidDataError(
            f"y has {len(y_arr)} labels but X has {n_samples} samples",
            errors=[{"loc": ["y"], "msg": f"{len(y_arr)} labels, expected {n_samples}"}],
        )
    if y_arr.dtype.kind in "biu":
        return y_arr.astype(np.int64, copy=False)
    if y_arr.dtype.kind == "f":
        if not np.all(np.isfinite(y_arr)) or not np.all(y_arr == np.round(y_arr)):
            raise InvalidDataError(
                "y must hold integers or strings; found non-integer numbers",
                errors=[{"loc": ["y"], "msg": "non-integer label"}],
            )
        return y_arr.astype(np.int64)
    if y_arr.dtype.kind == "U":
        return y_arr
    raise InvalidDataError(
        f"y must hold integers or strings; got values of type {y_arr.dtype}",
        errors=[{"loc": ["y"], "msg": f"unsupported label type {y_arr.dtype}"}],
    )
