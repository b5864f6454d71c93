"""Real tables: missing values, categorical columns and sample weights. No HTTP here.

A stored table keeps its numeric columns in ``X.npy`` (NaN where a cell is missing), its
categorical columns as integer codes in ``C.npy`` (-1 where missing; the sorted
categories of each in the dataset's meta) and its weights in ``w.npy``. A fit turns it
into the matrix scikit-learn's ``ColumnTransformer`` makes of it::

    ColumnTransformer([
        ("num", SimpleImputer(strategy="mean"), numeric_columns),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                              OneHotEncoder(handle_unknown="ignore")), categorical_columns),
    ])

(the imputers only with ``missing="impute"``): the numeric columns, then each categorical
column's one-hot block, its categories in sorted order. What that fit learnt (means,
most frequent categories, the categories) is kept as plain data in
:class:`Preprocessing`, so a model predicts raw rows, strings and nulls included, with
nothing to unpickle.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from service.errors import InvalidDataError, InvalidParameterError

Missing = Literal["error", "drop", "impute"]
Normalize = Literal["none", "l2"]
DEFAULT_MISSING: Missing = "error"
DEFAULT_NORMALIZE: Normalize = "none"
ColumnKind = Literal["numeric", "categorical", "label", "weight"]


@dataclass(frozen=True)
class Column:
    """One column of an uploaded table: its name, kind and how many cells are missing."""

    name: str
    kind: ColumnKind
    missing: int = 0


@dataclass
class TableParts:
    """What a table holds besides its numeric matrix: categorical codes, weights, and
    the columns in the file's order."""

    columns: list[Column]
    codes: np.ndarray | None = None  # (n_samples, n_categorical) int32, -1 missing
    categories: list[list[str]] | None = None  # sorted, per categorical column
    sample_weight: np.ndarray | None = None  # (n_samples,) float64

    @property
    def is_plain(self) -> bool:
        """Numbers only, no weights: stored (and hashed) as before tables existed."""
        return self.codes is None and self.sample_weight is None

    @property
    def nbytes(self) -> int:
        """What the parts take stored beside X and y: the codes (``C.npy``), the weights
        (``w.npy``) and the categories' text (in the meta)."""
        return (
            (0 if self.codes is None else self.codes.nbytes)
            + (0 if self.sample_weight is None else self.sample_weight.nbytes)
            + sum(len(v.encode()) for values in self.categories or [] for v in values)
        )

    def anonymous(self) -> TableParts:
        """The same parts with each column named by its place (``x0``, ``x1``...): what
        the shared bytes keep when the names are a tenant's own (its claim keeps them).
        The categories stay: they are the data's, the same for whoever sent it."""
        return dataclasses.replace(
            self,
            columns=[dataclasses.replace(c, name=f"x{j}") for j, c in enumerate(self.columns)],
        )


@dataclass(frozen=True)
class Preprocessing:
    """A fitted ColumnTransformer as plain data.

    ``features`` are the feature columns in the table's order with their kind;
    ``numeric_fill`` the numeric columns' means (``missing="impute"``, else None);
    ``categories`` and ``category_fill`` per categorical column.
    """

    features: tuple[tuple[str, str], ...]
    numeric_fill: tuple[float, ...] | None
    categories: tuple[tuple[str, ...], ...]
    category_fill: tuple[str, ...] | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Preprocessing:
        return cls(
            features=tuple((str(n), str(k)) for n, k in raw["features"]),
            numeric_fill=None if raw["numeric_fill"] is None else tuple(raw["numeric_fill"]),
            categories=tuple(tuple(c) for c in raw["categories"]),
            category_fill=None if raw["category_fill"] is None else tuple(raw["category_fill"]),
        )

    @property
    def numeric_names(self) -> list[str]:
        return [name for name, kind in self.features if kind == "numeric"]

    @property
    def categorical_names(self) -> list[str]:
        return [name for name, kind in self.features if kind == "categorical"]

    def design_names(self) -> list[str]:
        """The encoded columns' names: the numeric ones, then ``column=category``."""
        return self.numeric_names + [
            f"{name}={value}"
            for name, values in zip(self.categorical_names, self.categories, strict=True)
            for value in values
        ]

    def transform_rows(self, rows: Any) -> np.ndarray:
        """Raw rows (lists in the table's feature order, or objects keyed by column name;
        strings, numbers and nulls) as the design matrix the model's KMeans saw.

        A category never seen in training encodes as zeros (``handle_unknown="ignore"``);
        a null is imputed as in training, or refused when the model was fitted without
        imputation.
        """
        if not isinstance(rows, list) or not rows:
            raise InvalidDataError(
                "X must be a non-empty array of rows", errors=[{"loc": ["X"], "msg": "no rows"}]
            )
        names = [name for name, _ in self.features]
        numeric = self.numeric_names
        categorical = self.categorical_names
        n = len(rows)
        X_num = np.empty((n, len(numeric)), dtype=np.float64)
        codes = np.empty((n, len(categorical)), dtype=np.int64)
        lookup = [{v: i for i, v in enumerate(values)} for values in self.categories]
        for i, row in enumerate(rows):
            if isinstance(row, dict):
                unknown = sorted(set(row) - set(names))
                if unknown:
                    raise InvalidDataError(
                        f"X[{i}] names column {unknown[0]!r}, which the model has not; its "
                        f"columns are {', '.join(map(repr, names))}",
                        errors=[{"loc": ["X", i, unknown[0]], "msg": "unknown column"}],
                    )
                values = [row.get(name) for name in names]
            elif isinstance(row, list):
                if len(row) != len(names):
                    raise InvalidDataError(
                        f"X[{i}] has {len(row)} values but the model takes {len(names)} "
                        f"columns: {', '.join(map(repr, names))}",
                        errors=[{"loc": ["X", i], "msg": f"expected {len(names)} values"}],
                    )
                values = row
            else:
                raise InvalidDataError(
                    f"X[{i}] is neither an array of values nor an object keyed by column name",
                    errors=[{"loc": ["X", i], "msg": "not a row"}],
                )
            a = b = 0
            for (name, kind), value in zip(self.features, values, strict=True):
                if kind == "numeric":
                    X_num[i, a] = self._number(value, i, name, a)
                    a += 1
                else:
                    codes[i, b] = self._code(value, i, name, b, lookup[b])
                    b += 1
        return self._encode(X_num, codes)

    def _number(self, value: Any, i: int, name: str, a: int) -> float:
        if value is None:
            if self.numeric_fill is None:
                raise _null_refused(i, name)
            return self.numeric_fill[a]
        if type(value) not in (int, float) or not math.isfinite(value):
            raise InvalidDataError(
                f"X[{i}] column {name!r} is numeric; got {value!r}",
                errors=[{"loc": ["X", i, name], "msg": "not a finite number"}],
            )
        return float(value)

    def _code(self, value: Any, i: int, name: str, b: int, lookup: dict[str, int]) -> int:
        if value is None:
            if self.category_fill is None:
                raise _null_refused(i, name)
            return lookup[self.category_fill[b]]
        return lookup.get(category_text(value), -1)

    def _encode(self, X_num: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return np.hstack([X_num, *one_hot(codes, [len(c) for c in self.categories])])


def _null_refused(i: int, name: str) -> InvalidDataError:
    return InvalidDataError(
        f"X[{i}] column {name!r} is null, and the model was fitted without imputation "
        '(fit with "missing": "impute" to predict rows with missing values)',
        errors=[{"loc": ["X", i, name], "msg": "missing value"}],
    )


def category_text(value: Any) -> str:
    """A category as stored: booleans as ``true``/``false`` (as Arrow writes them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def one_hot(codes: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """One float64 block per column of ``codes``; a negative code (unknown) is all zeros."""
    blocks = []
    for j, size in enumerate(sizes):
        block = np.zeros((codes.shape[0], size), dtype=np.float64)
        known = codes[:, j] >= 0
        block[np.flatnonzero(known), codes[known, j]] = 1.0
        blocks.append(block)
    return blocks


@dataclass
class Design:
    """A dataset made ready for a fit: the matrix KMeans' pipeline starts from, the
    labels and weights of the rows kept, and the fitted preprocessing (None when the data
    went in as stored)."""

    X: np.ndarray
    y: np.ndarray | None
    sample_weight: np.ndarray | None
    preprocessing: Preprocessing | None


def design(
    X: np.ndarray,
    y: np.ndarray | None,
    codes: np.ndarray | None,
    categories: list[list[str]],
    sample_weight: np.ndarray | None,
    columns: list[dict[str, Any]],
    missing: str,
) -> Design:
    """Fit the preprocessing on a table and transform it (see the module's docstring)."""
    features = tuple(
        (c["name"], c["kind"]) for c in columns if c["kind"] in ("numeric", "categorical")
    )
    codes = np.empty((X.shape[0], 0), dtype=np.int64) if codes is None else codes.astype(np.int64)
    X_num = np.asarray(X, dtype=np.float64)
    absent = np.isnan(X_num).any(axis=1) | (codes < 0).any(axis=1)
    if absent.any():
        if missing == "error":
            raise missing_error([Column(**c) for c in columns])
        if missing == "drop":
            keep = np.flatnonzero(~absent)
            X_num, codes = X_num[keep], codes[keep]
            y = None if y is None else y[keep]
            sample_weight = None if sample_weight is None else sample_weight[keep]
            absent = np.zeros(len(keep), dtype=bool)
    numeric_fill = category_fill = None
    if missing == "impute":
        with np.errstate(invalid="ignore"):
            means = np.nanmean(X_num, axis=0) if X_num.shape[0] else np.zeros(X_num.shape[1])
        numeric_fill = tuple(float(v) for v in means)
        fills = []
        for j, values in enumerate(categories):
            present = codes[:, j][codes[:, j] >= 0]
            # SimpleImputer's most_frequent: the smallest of the most frequent values.
            code = int(np.argmax(np.bincount(present, minlength=len(values))))
            fills.append(values[code])
            codes[:, j] = np.where(codes[:, j] < 0, code, codes[:, j])
        category_fill = tuple(fills)
        nan = np.isnan(X_num)
        if nan.any():
            X_num = np.where(nan, np.asarray(numeric_fill), X_num)
    prep = Preprocessing(
        features=features,
        numeric_fill=numeric_fill,
        categories=tuple(tuple(c) for c in categories),
        category_fill=category_fill,
    )
    matrix = np.ascontiguousarray(np.hstack([X_num, *one_hot(codes, [len(c) for c in categories])]))
    if matrix.shape[0] < 2:
        raise InvalidDataError(
            f"only {matrix.shape[0]} row(s) have no missing cell; at least 2 samples are "
            'needed (send "missing": "impute" to keep the others)',
            errors=[{"loc": ["missing"], "msg": "too few complete rows"}],
        )
    return Design(matrix, y, sample_weight, prep)


def missing_error(columns: list[Column]) -> InvalidParameterError:
    """The 422 of a request with ``missing="error"`` on data with missing cells."""
    holes = [c for c in columns if c.missing]
    total = sum(c.missing for c in holes)
    where = ", ".join(f"{c.name!r} ({c.missing})" for c in holes)
    return InvalidParameterError(
        f"the dataset has {total} missing cell(s), in column(s) {where}: send "
        '"missing": "drop" to leave those rows out, or "missing": "impute" to fill them '
        "(the mean of a numeric column, the most frequent category of a categorical one)",
        errors=[{"loc": ["missing"], "msg": f"{total} missing cell(s) in {where}"}],
    )


def check_missing(columns: list[Column] | None, missing: str, n_samples: int | None = None) -> None:
    """Refuse (422), before any work, ``missing="error"`` on data with missing cells, and
    ``missing="impute"`` on a feature column with no value at all (nothing to fill it
    from: a most frequent category of none was a 500, a mean of none a NaN left in)."""
    if missing == "error" and columns and any(c.missing for c in columns):
        raise missing_error(columns)
    if missing == "impute" and columns and n_samples is not None:
        empty = [
            c.name
            for c in columns
            if c.kind in ("numeric", "categorical") and c.missing >= n_samples
        ]
        if empty:
            named = ", ".join(map(repr, empty))
            raise InvalidParameterError(
                f"column(s) {named} hold no value at all: there is nothing to impute them "
                'from; upload the table without them, or send "missing": "drop"',
                errors=[{"loc": ["missing"], "msg": f"no value in {named}"}],
            )
