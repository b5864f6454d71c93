"""Sparse data as a canonical CSR matrix: ``scipy.sparse.save_npz`` archives (members
checked before they are inflated) and libsvm text."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from service.datasets import as_labels
from service.errors import InvalidDataError, PayloadTooLargeError
from service.formats.columns import _is_number, _no_rows
from service.formats.delimited import _blank
from service.formats.libs import scipy, sklearn
from service.formats.limits import Arrays, Bounds, ReadNotes, _size, check_cells, check_sparse_size
from service.formats.npy_headers import (
    _array_name,
    _check_size,
    _member_header,
    _read_member,
    _stored_itemsize,
)

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
) -> Arrays:
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


def _read_libsvm(path: Path, label_column: str | None, bounds: Bounds, notes: ReadNotes) -> Arrays:
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
