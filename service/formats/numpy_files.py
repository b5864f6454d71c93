"""``.npy`` and ``.npz`` files: each header read and checked against the bounds before
a value is decoded (``allow_pickle=False``)."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from service.datasets import as_feature_matrix, as_labels
from service.errors import InvalidDataError
from service.formats.columns import _numeric_parts
from service.formats.limits import Arrays, Bounds, ReadNotes, check_stored_bytes
from service.formats.npy_headers import (
    _array_name,
    _check_features_header,
    _check_size,
    _check_y_header,
    _member_header,
    _npy_header,
    _read_member,
    _stored_itemsize,
)
from service.formats.sparse import _is_save_npz, _read_scipy_sparse

# -- NumPy files --------------------------------------------------------------------------


def _read_npy(path: Path, label_column: str | None, bounds: Bounds, notes: ReadNotes) -> Arrays:
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
    mapped = X
    X = as_feature_matrix(X, allow_missing=True)
    notes.parts = _numeric_parts(X)
    # The values where np.save puts them (64-byte aligned), and X those very bytes: the
    # file holds X as the store would write it.
    if header.size % np.lib.format.ARRAY_ALIGN == 0 and _same_values(X, mapped):
        notes.npy_file = path
    return X, None


def _same_values(X: np.ndarray, mapped: np.ndarray) -> bool:
    """Whether ``X`` is ``mapped`` itself (a view of all its bytes, in their order and
    dtype), not a conversion of it."""
    return (
        X.dtype == mapped.dtype
        and X.shape == mapped.shape
        and X.flags.c_contiguous
        and mapped.flags.c_contiguous
        and X.__array_interface__["data"][0] == mapped.__array_interface__["data"][0]
    )


def _read_npz(path: Path, label_column: str | None, bounds: Bounds, notes: ReadNotes) -> Arrays:
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
