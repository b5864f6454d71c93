"""The libraries the readers use, loaded on first use: pyarrow reads CSV and Parquet,
SciPy and scikit-learn sparse data, in the data workers; the API process never loads
them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.lazy import LazyModule

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute
    import pyarrow.csv
    import pyarrow.parquet
    import scipy.sparse
    import sklearn.datasets
else:
    pa = pyarrow = LazyModule("pyarrow", "compute", "csv", "parquet")
    scipy = LazyModule("scipy", "sparse")
    sklearn = LazyModule("sklearn", "datasets")

__all__ = ["pa", "pyarrow", "scipy", "sklearn"]
