"""Sparse uploads (API.md Part 3 "Sparse data"): libsvm text and ``save_npz`` files are
read, bounded and stored as CSR arrays, never densified, and described with their density."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from service.datasets import SPARSE_FILES, load_arrays

pytestmark = pytest.mark.anyio


def test_load_arrays_maps_a_sparse_folder_as_csr(tmp_path: Path) -> None:
    # Check that a folder holding the CSR arrays (no X.npy) loads as a csr_matrix over
    # memory-mapped arrays, equal to the matrix saved, with its labels.
    dense = np.array([[0.0, 1.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, -3.0]])
    X = scipy.sparse.csr_matrix(dense)
    for name, array in zip(SPARSE_FILES, (X.data, X.indices, X.indptr), strict=True):
        np.save(tmp_path / name, array, allow_pickle=False)
    np.save(tmp_path / "y.npy", np.array([0, 1, 1]), allow_pickle=False)
    meta = {"sparse": {"shape": [3, 4], "nnz": int(X.nnz)}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))

    loaded, y = load_arrays(tmp_path / "X.npy", tmp_path / "y.npy")

    assert scipy.sparse.issparse(loaded)
    assert loaded.format == "csr"
    assert loaded.shape == (3, 4)
    assert loaded.nnz == 3
    # Read-only views of the mapped files, not copies (a copy would be writeable).
    for array in (loaded.data, loaded.indices, loaded.indptr):
        assert not array.flags.owndata
        assert not array.flags.writeable
    assert np.array_equal(loaded.toarray(), dense)
    assert y is not None
    assert y.tolist() == [0, 1, 1]
