"""A stored dataset read back in a worker: memory-mapped, never unpickled, and made
ready for a fit (:func:`load_design`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from service.datasets.info import SPARSE_FILES
from service.tables import Design, design


def read_meta(folder: Path) -> dict[str, Any]:
    """A stored dataset's meta.json, as stored."""
    meta: dict[str, Any] = json.loads((folder / "meta.json").read_text())
    return meta


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
        # Copy-on-write too: PCA validates its input writable and would copy a read-only
        # mapping whole, though its covariance solver (tall data) never writes it.
        X = np.load(X_path, mmap_mode="c", allow_pickle=False)
    y = None if y_path is None else np.load(y_path, allow_pickle=False)
    return X, y


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
