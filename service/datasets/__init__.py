"""Datasets: built-in and client-sent data as validated arrays, content-addressed on disk.

A dataset is identified by the sha256 of its parsed numbers (dtype, shape, values and
labels), so the same data reaches the same id however it was sent. Each one is stored
once, as ``X.npy`` (and ``y.npy``) under ``<data_dir>/datasets/<id>/``, and compute
workers memory-map it instead of receiving pickled arrays.
"""

from __future__ import annotations

from service.datasets.files import load_arrays, load_design
from service.datasets.identity import csr_arrays, is_sparse
from service.datasets.info import BUILTIN_LOADERS, SPARSE_FILES, DatasetInfo, is_id, unknown_dataset
from service.datasets.store import DatasetStore, load_builtin, store_builtin
from service.datasets.validation import as_feature_matrix, as_labels

__all__ = [
    "BUILTIN_LOADERS",
    "SPARSE_FILES",
    "DatasetInfo",
    "DatasetStore",
    "as_feature_matrix",
    "as_labels",
    "csr_arrays",
    "is_id",
    "is_sparse",
    "load_arrays",
    "load_builtin",
    "load_design",
    "store_builtin",
    "unknown_dataset",
]
