"""Datasets: built-in and client-sent data as validated arrays, content-addressed on disk.

A dataset is identified by the sha256 of its parsed numbers (dtype, shape, values and
labels), so the same data reaches the same id however it was sent. Each one is stored
once, as ``X.npy`` (and ``y.npy``) under ``<data_dir>/datasets/<id>/``, and compute
workers memory-map it instead of receiving pickled arrays.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import (
    DatasetConflictError,
    DatasetNotFoundError,
    InvalidDataError,
    InvalidParameterError,
    StorageFullError,
    clip,
    storage_errors,
)
from service.tables import Column, Design, TableParts, design

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


def is_sparse(X: Any) -> bool:
    """Whether ``X`` is a SciPy CSR matrix (told without importing SciPy)."""
    return getattr(X, "format", None) == "csr"


def csr_arrays(X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CSR matrix's stored arrays, in the order of :data:`SPARSE_FILES`."""
    return X.data, X.indices, X.indptr


def stored_nbytes(X: Any) -> int:
    """The bytes X takes stored: its values, or a sparse X's CSR arrays."""
    if is_sparse(X):
        return sum(a.nbytes for a in csr_arrays(X))
    return int(X.nbytes)


def _hash_in_blocks(digest: Any, array: np.ndarray, dtype: np.dtype[Any]) -> None:
    """``digest.update`` with ``array``'s bytes as ``dtype``, converted a block at a time:
    the same digest as one update with the whole converted array, without making it
    (5 M int32 indices: 40 MB not made, and 0.19 s of fresh pages not faulted in)."""
    step = 1 << 20
    for start in range(0, len(array), step):
        block = np.ascontiguousarray(array[start : start + step], dtype=dtype)
        digest.update(block.data.cast("B"))


def content_hash(X: Any, y: np.ndarray | None, parts: TableParts | None = None) -> str:
    """sha256 of the dtype, shape and values of ``X`` and ``y`` (and of a table's
    columns, categories and weights, when it has more than numbers): the dataset id.

    A sparse X (canonical CSR) is hashed by its shape and CSR arrays under another
    header key, so that its id never equals a dense dataset's."""
    dtype = np.dtype(X.dtype).newbyteorder("<")
    header = {
        "sparse" if is_sparse(X) else "X": [dtype.str, list(X.shape)],
        "y": None if y is None else ["str" if y.dtype.kind == "U" else "int64", len(y)],
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    if is_sparse(X):
        data, indices, indptr = csr_arrays(X)
        # Indices as 64-bit: the same matrix has one id whatever index width it came with.
        for array, as_type in ((data, dtype), (indices, "<i8"), (indptr, "<i8")):
            _hash_in_blocks(digest, array, np.dtype(as_type))
    else:
        little_endian = np.ascontiguousarray(X, dtype=dtype)
        if little_endian.size:  # a table of categories alone has no numbers (nothing to cast)
            digest.update(little_endian.data.cast("B"))
    if y is not None:
        if y.dtype.kind == "U":
            digest.update(json.dumps(y.tolist()).encode())
        else:
            digest.update(y.astype("<i8", copy=False).tobytes())
    if parts is not None and not parts.is_plain:
        # Only tables with categories or weights: plain numbers keep the ids they had.
        digest.update(
            json.dumps(
                {
                    # Kinds and counts, never names: the id is the data's, whoever named it.
                    "columns": [[c.kind, c.missing] for c in parts.columns],
                    "categories": parts.categories,
                }
            ).encode()
        )
        if parts.codes is not None:
            digest.update(parts.codes.astype("<i4", copy=False).tobytes())
        if parts.sample_weight is not None:
            digest.update(parts.sample_weight.astype("<f8", copy=False).tobytes())
    return digest.hexdigest()


@cache
def _builtin_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets

    loader: Callable[..., tuple[np.ndarray, np.ndarray]] = getattr(
        sklearn.datasets, BUILTIN_LOADERS[name]
    )
    X, y = loader(return_X_y=True)
    return np.ascontiguousarray(X, dtype=np.float64), y.astype(np.int64)


def load_builtin(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The arrays of a built-in dataset, as scikit-learn ships them (no download)."""
    if name not in BUILTIN_LOADERS:
        raise DatasetNotFoundError(f"no built-in dataset named {name!r}")
    return _builtin_arrays(name)


class DatasetStore:
    """Content-addressed datasets under ``<data_dir>/datasets``.

    Writes go to a temporary folder renamed into place, so a dataset folder is
    either whole or absent, whatever process writes it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        # Each info with the stamp of the meta file it was read from (:func:`_stamp`): another
        # process (a worker storing an upload) may rewrite the file, e.g. to mark inline
        # data as uploaded, and a stale info would list it as inline for ever.
        self._infos: dict[str, tuple[tuple[int, int], DatasetInfo]] = {}
        self._builtin_ids: dict[str, str] = {}
        self._lock = threading.Lock()

    def path(self, dataset_id: str) -> Path:
        if not is_id(dataset_id):
            raise DatasetNotFoundError(f"{dataset_id!r} is not a dataset id (64 hex characters)")
        return self.root / dataset_id

    def put(
        self,
        X: Any,
        y: np.ndarray | None,
        *,
        name: str | None,
        format: str,
        inline: bool = False,
        feature_names: list[str] | None = None,
        parts: TableParts | None = None,
    ) -> tuple[DatasetInfo, bool]:
        """Store validated arrays; returns the info and whether it was new.

        The same numbers sent again keep the name and feature names they were first
        stored with (the id is the numbers' alone). ``parts``: a table's columns,
        categorical codes and weights (see :mod:`service.tables`). A sparse X (a canonical
        CSR matrix) is stored as its three arrays (:data:`SPARSE_FILES`), never densified.
        """
        dataset_id = content_hash(X, y, parts)
        final = self.root / dataset_id
        if (final / "meta.json").exists():
            try:
                known = self.get(dataset_id)
                if known.inline and not inline:
                    # Uploaded now: it is the client's to keep, no longer a pruneable copy.
                    known = replace(known, inline=False)
                    self._write_meta(final, known)
                self.touch(known)
                return known, False
            except (DatasetNotFoundError, FileNotFoundError):
                # Removed since the look (the last holder let go, or another tenant's
                # roll-back): stored anew below. It was a 404 for data just sent.
                pass
        table = _table_fields(X, parts)
        info = DatasetInfo(
            id=dataset_id,
            name=name,
            n_samples=int(X.shape[0]),
            n_features=table.pop("n_features", int(X.shape[1])),
            has_labels=y is not None,
            n_labels=None if y is None else int(np.unique(y).size),
            dtype=X.dtype.name,
            format=format,
            inline=inline,
            feature_names=feature_names,
            sparse=is_sparse(X),
            nnz=int(X.nnz) if is_sparse(X) else None,
            **table,
        )
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        try:
            with storage_errors(f"storing dataset {dataset_id}", self.root):
                # A tenant's data is readable by this service's user only, not 0644 by any.
                tmp.mkdir(mode=0o700)
                if is_sparse(X):
                    for file, array in zip(SPARSE_FILES, csr_arrays(X), strict=True):
                        np.save(tmp / file, array, allow_pickle=False)
                else:
                    np.save(tmp / "X.npy", X, allow_pickle=False)
                if y is not None:
                    np.save(tmp / "y.npy", y, allow_pickle=False)
                if parts is not None and parts.codes is not None:
                    np.save(tmp / "C.npy", parts.codes, allow_pickle=False)
                if parts is not None and parts.sample_weight is not None:
                    np.save(tmp / "w.npy", parts.sample_weight, allow_pickle=False)
                (tmp / "meta.json").write_text(json.dumps(info.meta()))
                for child in tmp.iterdir():
                    child.chmod(0o600)
                    _fsync(child)
                try:
                    tmp.rename(final)
                except OSError:
                    if not (final / "meta.json").exists():
                        raise
                    # Another process stored the same content first; theirs is as good.
                    return self.get(dataset_id), False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._remember(info)
        return info, True

    def get(self, dataset_id: str) -> DatasetInfo:
        meta = self.path(dataset_id) / "meta.json"
        with self._lock:
            known = self._infos.get(dataset_id)
        # Another process may have deleted or rewritten it: a stat is the price of not
        # serving a ghost.
        try:
            stamp = _stamp(meta)
            if known is not None and known[0] == stamp:
                return known[1]
            info = DatasetInfo.from_meta(json.loads(meta.read_text()))
        except FileNotFoundError:
            raise DatasetNotFoundError(f"no dataset with id {dataset_id}") from None
        with self._lock:
            self._infos[dataset_id] = (stamp, info)
        return info

    def _remember(self, info: DatasetInfo) -> None:
        """Cache ``info``, just written to its meta file."""
        with contextlib.suppress(OSError):
            stamp = _stamp(self.root / info.id / "meta.json")
            with self._lock:
                self._infos[info.id] = (stamp, info)

    def builtin(self, name: str) -> DatasetInfo:
        """The stored copy of a built-in dataset, written on first use (scikit-learn
        loads it: in a worker, see :func:`store_builtin`)."""
        info = self.stored_builtin(name)
        if info is not None:
            return info
        X, y = load_builtin(name)
        info, _ = self.put(X, y, name=name, format="builtin")
        self.remember_builtin(name, info)
        return info

    def stored_builtin(self, name: str) -> DatasetInfo | None:
        """The stored copy of a built-in dataset once this process knows it, else None."""
        with self._lock:
            dataset_id = self._builtin_ids.get(name)
        return None if dataset_id is None else self.get(dataset_id)

    def remember_builtin(self, name: str, info: DatasetInfo) -> None:
        """Know ``info`` as the stored copy of the built-in ``name`` (written elsewhere)."""
        with self._lock:
            self._builtin_ids[name] = info.id
        self._remember(info)

    def stored(self) -> list[DatasetInfo]:
        """Every stored dataset (built-in copies included), built-ins first."""
        found = []
        for folder in self.root.iterdir():
            if is_id(folder.name):
                try:
                    found.append(self.get(folder.name))
                except (DatasetNotFoundError, ValueError, TypeError):
                    continue  # half-deleted, or not ours
        order = list(BUILTIN_LOADERS)
        return sorted(
            found,
            key=lambda i: (
                order.index(i.name) if i.format == "builtin" and i.name in order else len(order),
                i.name or "",
                i.id,
            ),
        )

    def delete(self, dataset_id: str) -> None:
        """Remove an uploaded dataset; built-in copies stay (they are not the client's)."""
        info = self.get(dataset_id)
        if info.format == "builtin":
            raise DatasetConflictError(
                f"{info.id} is the stored copy of the built-in dataset {info.name!r}; "
                "built-in datasets cannot be deleted"
            )
        trash = self.root / f".trash-{uuid.uuid4().hex}"
        try:
            with storage_errors(f"deleting dataset {dataset_id}", self.root):
                (self.root / dataset_id).rename(trash)
        except FileNotFoundError:
            raise DatasetNotFoundError(f"no dataset with id {dataset_id}") from None
        with self._lock:
            self._infos.pop(dataset_id, None)
        shutil.rmtree(trash, ignore_errors=True)

    def _write_meta(self, folder: Path, info: DatasetInfo) -> None:
        tmp = folder / f".meta-{uuid.uuid4().hex}"
        try:
            with storage_errors(f"updating dataset {info.id}", folder):
                tmp.write_text(json.dumps(info.meta()))
                tmp.replace(folder / "meta.json")
        finally:
            with contextlib.suppress(OSError):  # read-only: unlink fails even when missing
                tmp.unlink(missing_ok=True)
        self._remember(info)

    def touch(self, info: DatasetInfo) -> None:
        """Mark an inline dataset as just used (its meta file's time orders the pruning)."""
        if info.inline:
            # Only the pruning order: a read-only or full disk must not fail a read.
            with contextlib.suppress(OSError):
                os.utime(self.root / info.id / "meta.json")

    def prune_inline(self, max_bytes: int, *, keep: str) -> list[str]:
        """Delete the least recently used inline datasets past ``max_bytes``; never ``keep``.

        Returns the ids deleted.
        """
        found = []
        for folder in self.root.iterdir():
            if not is_id(folder.name) or folder.name == keep:
                continue
            try:
                meta = folder / "meta.json"
                if not json.loads(meta.read_text()).get("inline"):
                    continue
                size = sum(f.stat().st_size for f in folder.iterdir())
                found.append((meta.stat().st_mtime, size, folder.name))
            except (OSError, ValueError):
                continue  # being written or deleted by another process
        keep_size = sum(f.stat().st_size for f in (self.root / keep).iterdir())
        total = keep_size + sum(size for _, size, _ in found)
        deleted = []
        for _, size, dataset_id in sorted(found):
            if total <= max_bytes:
                break
            with contextlib.suppress(DatasetNotFoundError):
                self.delete(dataset_id)
                deleted.append(dataset_id)
            total -= size
        return deleted

    def check_room(
        self,
        X: Any,
        y: np.ndarray | None,
        max_bytes: int,
        parts: TableParts | None = None,
    ) -> None:
        """Refuse (507) new uploaded data that would take the stored uploads (built-ins
        and inline data aside) past ``max_bytes``; data already stored always fits.
        A table's codes, categories and weights count with its numbers."""
        if (self.root / content_hash(X, y, parts) / "meta.json").exists():
            return
        adding = stored_nbytes(X) + (0 if y is None else y.nbytes)
        adding += 0 if parts is None else parts.nbytes
        stored = 0
        for folder in self.root.iterdir():
            try:
                meta = json.loads((folder / "meta.json").read_text())
                if is_id(folder.name) and meta["format"] != "builtin" and not meta["inline"]:
                    stored += sum(f.stat().st_size for f in folder.iterdir())
            except (OSError, ValueError, KeyError):
                continue  # not a dataset, or being written or deleted by another process
        if stored + adding > max_bytes:
            raise StorageFullError(
                f"storing this dataset ({adding:,} bytes) would take the uploaded datasets "
                f"past {max_bytes:,} bytes ({stored:,} stored; CLUSTERBENCH_DATASETS_MAX_BYTES); "
                "delete datasets to make room"
            )

    def exists(self, info: DatasetInfo) -> bool:
        """Whether the dataset is still stored (built-ins always are: they come back)."""
        return info.format == "builtin" or (self.root / info.id / "meta.json").exists()

    def files(self, info: DatasetInfo) -> tuple[Path, Path | None]:
        folder = self.root / info.id
        return folder / "X.npy", (folder / "y.npy") if info.has_labels else None


def _stamp(path: Path) -> tuple[int, int]:
    """A file's inode and modification time: a file replaced (a new inode) or touched
    (a new time) has another stamp, even within the clock's resolution."""
    status = path.stat()
    return status.st_ino, status.st_mtime_ns


def _table_fields(X: np.ndarray, parts: TableParts | None) -> dict[str, Any]:
    """The DatasetInfo fields of a table with more than complete numbers."""
    if parts is None:
        return {}
    codes = parts.codes
    absent = np.isnan(X).any(axis=1) if X.dtype.kind == "f" else np.zeros(len(X), bool)
    if codes is not None:
        absent |= (codes < 0).any(axis=1)
    if parts.is_plain and not absent.any():
        return {}
    categories = parts.categories or []
    return {
        "n_features": sum(c.kind in ("numeric", "categorical") for c in parts.columns),
        "columns": [asdict(c) for c in parts.columns],
        "categories": categories or None,
        "complete_rows": int(len(X) - absent.sum()),
        "n_encoded": int(X.shape[1] + sum(len(c) for c in categories)),
    }


def read_meta(folder: Path) -> dict[str, Any]:
    """A stored dataset's meta.json, as stored."""
    meta: dict[str, Any] = json.loads((folder / "meta.json").read_text())
    return meta


def store_builtin(root: Path, name: str) -> DatasetInfo:
    """Worker entry point: the built-in dataset ``name`` stored under ``root``."""
    return DatasetStore(root).builtin(name)


def is_sparse_folder(folder: Path) -> bool:
    """Whether the dataset stored in ``folder`` holds a sparse X (its CSR arrays)."""
    return (folder / SPARSE_FILES[0]).exists()


def load_arrays(X_path: Path, y_path: Path | None) -> tuple[Any, np.ndarray | None]:
    """Memory-map a stored dataset (never unpickling anything).

    ``X_path`` is the folder's ``X.npy``; a sparse dataset's folder holds its CSR arrays
    instead, and X is then a ``scipy.sparse.csr_matrix`` over the memory-mapped arrays.
    """
    folder = X_path.parent
    X: Any
    if is_sparse_folder(folder):
        import scipy.sparse

        # Copy-on-write: scikit-learn's Cython k-means declares the arrays writable
        # buffers (MiniBatchKMeans the values too) though it never writes them, so no
        # page is copied, and a scaled copy of the values shares the indices and pointers.
        data, indices, indptr = (
            np.load(folder / name, mmap_mode="c", allow_pickle=False) for name in SPARSE_FILES
        )
        shape = read_meta(folder)["sparse"]["shape"]
        # The arrays were checked when stored: no copy, no re-check of their order.
        X = scipy.sparse.csr_matrix((data, indices, indptr), shape=tuple(shape), copy=False)
        X.has_sorted_indices = True
        X.has_canonical_format = True
    else:
        X = np.load(X_path, mmap_mode="r", allow_pickle=False)
    y = None if y_path is None else np.load(y_path, allow_pickle=False)
    return X, y


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_design(X_path: Path, y_path: Path | None, missing: str) -> Design:
    """The stored dataset at ``X_path`` (with ``C.npy``, ``w.npy`` and its meta beside
    it) as a :class:`Design`, rows and cells handled as ``missing`` says."""
    X, y = load_arrays(X_path, y_path)
    folder = X_path.parent
    meta = read_meta(folder)
    columns = meta.get("columns")
    if not columns:
        return Design(X, y, None, None)
    codes = np.load(folder / "C.npy", allow_pickle=False) if (folder / "C.npy").exists() else None
    weights = np.load(folder / "w.npy", allow_pickle=False) if (folder / "w.npy").exists() else None
    return design(X, y, codes, meta.get("categories") or [], weights, columns, missing)
