"""scikit-learn's KMeans without three of its temporaries as large as the data
(:func:`lean_kmeans`), and every number the same.

Each replaces a private part of scikit-learn for the length of one fit; the tests hold
each to the part it replaces, with ``numpy.array_equal`` (``tests/test_blockwise.py``),
and fail if a new scikit-learn stops making the temporaries the way this module expects.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from service import blockwise
from service.blockwise import Squares


def kmeans_tolerance(X: Any, tol: float) -> Any:
    """scikit-learn's ``KMeans`` tolerance, ``np.mean(np.var(X, axis=0)) * tol``, without
    ``np.var``'s temporary ``X - mean`` (as large as the data); :func:`lean_kmeans`
    puts it in scikit-learn's place."""
    if tol == 0:
        return 0
    if not isinstance(X, np.ndarray):  # sparse: scikit-learn's own computation
        from sklearn.utils.sparsefuncs import mean_variance_axis

        return np.mean(mean_variance_axis(X, axis=0)[1]) * tol
    if X.shape[1] == 1 or not X.flags.c_contiguous:
        return np.mean(np.var(X, axis=0)) * tol
    # np.var's steps: sums in X's own dtype, each divided in place by the count (an intp).
    count = np.intp(X.shape[0])
    mean = blockwise.column_sum(X, dtype=X.dtype.type)
    np.true_divide(mean, count, out=mean, casting="unsafe")
    variances = blockwise.column_sum(X, _squares_in_dtype(mean), dtype=X.dtype.type)
    np.true_divide(variances, count, out=variances, casting="unsafe")
    return np.mean(variances) * tol


def _squares_in_dtype(mean: np.ndarray) -> Squares:
    def squares(block: np.ndarray) -> np.ndarray:
        deviations: np.ndarray = np.subtract(block, mean)
        np.square(deviations, out=deviations)
        return deviations

    return squares


@contextmanager
def lean_kmeans() -> Iterator[None]:
    """Within the block, KMeans (and MiniBatchKMeans, BisectingKMeans) fit without three
    temporaries as large as the data, and with the same numbers:

    - the tolerance is :func:`kmeans_tolerance`: without ``np.var``'s ``X - mean`` at
      the start of every fit;
    - an emptied cluster is relocated with the distances of
      ``((X - centers[labels]) ** 2).sum(axis=1)`` summed a block of rows at a time
      (:class:`BlockRows`): scikit-learn's Cython evaluates that line in full, two
      arrays of X's size (1M x 32 float32, ``init="random"``: 3.19x the data traced
      at the peak, now 1.28x, and 3.3 s -> 2.7 s). Its module sees :data:`_RELOCATION_NUMPY` for
      ``np``; it calls ``np.asarray`` nowhere else;
    - k-means++ on sparse data measures its candidates against every row with
      :func:`sparse_dot_untransposed`.

    A worker runs one fit at a time; another thread sees the same numbers either way.
    """
    from sklearn.cluster import _k_means_common, _kmeans
    from sklearn.metrics import pairwise

    originals = _kmeans._tolerance, _k_means_common.np, pairwise.safe_sparse_dot
    _kmeans._tolerance = kmeans_tolerance
    _k_means_common.np = _RELOCATION_NUMPY
    pairwise.safe_sparse_dot = functools.partial(sparse_dot_untransposed, pairwise.safe_sparse_dot)
    try:
        yield
    finally:
        _kmeans._tolerance, _k_means_common.np, pairwise.safe_sparse_dot = originals


def sparse_dot_untransposed(
    safe_sparse_dot: Callable[..., Any], a: Any, b: Any, *, dense_output: bool = False
) -> Any:
    """scikit-learn's ``safe_sparse_dot(a, b, dense_output=True)``; of a CSR ``a`` and
    the transpose of a CSR (``X.T``: k-means++ on sparse data, a few candidate rows
    against every row, for every centre), as ``(b.T @ a.T).T``.

    scipy multiplies CSR by CSR, so ``a @ X.T`` made a transposed copy of the whole of
    ``X`` for each centre (100k x 50k at 0.1 %: 60 MB, and the fit took 1.37 s, now
    0.9 s). Both products add, for each entry, the products of the two rows' common
    columns in column order (canonical CSR: sorted, no duplicates): the same numbers.
    """
    from scipy import sparse

    if (
        dense_output
        and sparse.issparse(a)
        and sparse.issparse(b)
        and a.format == "csr"
        and b.format == "csc"
        and a.has_canonical_format
        and b.T.has_canonical_format
    ):
        return np.ascontiguousarray((b.T @ a.T).toarray().T)
    return safe_sparse_dot(a, b, dense_output=dense_output)


class BlockRows:
    """An array of ``n`` rows computed a block of :data:`blockwise.BLOCK_ROWS` rows at a time:
    ``rows(index)`` gives the rows at ``index`` (a slice or an array of row numbers).

    Gathering rows (``A[labels]``), subtracting one from another of as many rows and
    raising to a power defer; ``sum(axis=1)`` then takes each block's rows, computed
    alone, and sums them: numpy sums each row of a C-ordered block on its own, so the
    numbers are those of the whole array. Anything else makes the whole array first.
    """

    def __init__(self, rows: Callable[[Any], np.ndarray], n: int) -> None:
        self._rows, self._n = rows, n

    @classmethod
    def of(cls, a: Any, *args: Any, **kwargs: Any) -> BlockRows:
        array = np.asarray(a, *args, **kwargs)
        return cls(array.__getitem__, len(array))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self._rows(slice(None))
        return whole if dtype is None else whole.astype(dtype)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # numpy's own protocols: __array__ answers
            raise AttributeError(name)
        return getattr(np.asarray(self), name)

    def __getitem__(self, index: Any) -> Any:
        chosen = np.asarray(index)
        if chosen.ndim == 1 and chosen.dtype.kind in "iu":
            return BlockRows(lambda at: self._rows(chosen[at]), len(chosen))
        return np.asarray(self)[index]

    def __sub__(self, other: Any) -> Any:
        if isinstance(other, BlockRows) and other._n == self._n:
            return BlockRows(lambda at: self._rows(at) - other._rows(at), self._n)
        return np.asarray(self) - other

    def __pow__(self, exponent: Any) -> BlockRows:
        return BlockRows(lambda at: self._rows(at) ** exponent, self._n)

    def sum(self, axis: Any = None, **kwargs: Any) -> Any:
        if axis != 1 or kwargs or self._n == 0:
            return np.asarray(self).sum(axis=axis, **kwargs)
        starts = range(0, self._n, blockwise.BLOCK_ROWS)
        return np.concatenate(
            [self._rows(slice(i, i + blockwise.BLOCK_ROWS)).sum(axis=1) for i in starts]
        )


class _RelocationNumpy:
    """numpy, but for ``asarray``, which gives a :class:`BlockRows`."""

    asarray = staticmethod(BlockRows.of)

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


_RELOCATION_NUMPY = _RelocationNumpy()
