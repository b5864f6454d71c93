"""Whole-matrix statistics computed a block of rows at a time, with the numbers of the
one-shot computations they replace.

A benchmark's worker holds the stored data (memory-mapped) and the one scaled copy
KMeans fits on; everything else it computes over all rows (the scaler's statistics,
each row's distance to its centre, the clusters' means and deviations) is done here in
blocks of :data:`BLOCK_ROWS` rows, so that no float64 temporary of the whole matrix is
ever made. Measured on 1M x 32 float32 (128 MB): ``StandardScaler().fit_transform``
peaks at 2.25x the data above what it starts with, :func:`fit_scaler` at 1.0x (the
copy itself), in the same time.

The sums are bit-for-bit those of the one-shot code: numpy adds the rows of a C-ordered
matrix along axis 0 one after another (no pairwise summation across rows), so carrying
the running sum into the next block as its first row continues the same sequence of
additions (:func:`column_sum`). ``tests/test_blockwise.py`` holds each function to the
code it replaces, with ``numpy.array_equal``.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sklearn.preprocessing import StandardScaler

Squares = Callable[[np.ndarray], np.ndarray]

# 32768 rows of 64 float64 values are 16 MB: small beside any matrix worth the care,
# large enough that the per-block overhead does not show.
BLOCK_ROWS = 1 << 15


def block_rows(X: Any, per_row: int = 8) -> int:
    """Rows a block of ``X`` takes: :data:`BLOCK_ROWS`, or for sparse data as many rows
    as hold about ``BLOCK_ROWS * per_row`` stored values (by default 2 MB of float64:
    a block of rows is copied whole when sliced)."""
    if not is_sparse(X) or X.nnz == 0:
        return BLOCK_ROWS
    return max(1, BLOCK_ROWS * per_row * int(X.shape[0]) // int(X.nnz))


def is_sparse(X: Any) -> bool:
    """Whether ``X`` is a scipy.sparse matrix (without importing scipy)."""
    return not isinstance(X, np.ndarray) and hasattr(X, "tocsr")


def _sparse_sums(
    X: Any, labels: np.ndarray, n_clusters: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each cluster's size, sum of rows and sum of squared rows (float64), of sparse ``X``
    (CSR), from its stored values a block of rows at a time: each value is counted
    into its (cluster, column) cell by ``np.bincount``, over X's own arrays (a block
    is never copied). Nothing of X's size is made, dense or sparse."""
    n_samples, n_features = X.shape
    cells = n_clusters * n_features
    sums, squares = np.zeros(cells), np.zeros(cells)
    step = block_rows(X, per_row=32)  # 1 M values, 24 MB of keys, values and squares
    for start in range(0, n_samples, step):
        stop = min(start + step, n_samples)
        pointers = X.indptr[start : stop + 1]
        first, last = int(pointers[0]), int(pointers[-1])
        values = X.data[first:last].astype(np.float64, copy=False)
        row_cells = labels[start:stop].astype(np.int64) * n_features
        keys = np.repeat(row_cells, np.diff(pointers)) + X.indices[first:last]
        sums += np.bincount(keys, weights=values, minlength=cells)
        squares += np.bincount(keys, weights=values * values, minlength=cells)
        release_rows(X, start, stop)
    shape = (n_clusters, n_features)
    sizes = np.bincount(labels, minlength=n_clusters)
    return sizes, sums.reshape(shape), squares.reshape(shape)


def with_values(X: Any, values: np.ndarray) -> Any:
    """A CSR matrix of ``X``'s shape and sparsity structure holding ``values``: it shares
    X's column indices and row pointers, as scipy's own ``_with_data`` (which copies
    them) does not."""
    from scipy import sparse

    Z = sparse.csr_matrix((values, X.indices, X.indptr), shape=X.shape, copy=False)
    Z.has_sorted_indices = X.has_sorted_indices
    return Z


def scale_sparse_columns(X: Any, factor: np.ndarray) -> Any:
    """What ``StandardScaler(with_mean=False).transform`` makes of CSR ``X``: a copy with
    each value multiplied by its column's ``factor`` (``inplace_csr_column_scale``'s
    ``X.data *= factor.take(X.indices)``, in X's dtype). Only the values are new: the
    copy shares X's column indices and row pointers, and each block of stored values
    gives its pages back once scaled (:func:`release_pages`), so the worker holds the
    stored values or their scaled copy, never both whole. Measured on 100k x 50k at
    0.1 % (5 M values): 40 MB made, where the transform copies 60 MB; a block's column
    factors are 2 MB (at 2 million values a block they were 32 MB more)."""
    values = np.empty(X.data.shape, X.data.dtype)
    step = BLOCK_ROWS * 8
    for start in range(0, len(values), step):
        stop = start + step
        np.multiply(
            X.data[start:stop],
            factor.take(X.indices[start:stop], mode="clip"),
            out=values[start:stop],
            casting="same_kind",
        )
        release_pages(X.data[start:stop])
    return with_values(X, values)


def column_sum(
    X: np.ndarray,
    transform: Callable[[np.ndarray], np.ndarray] = np.asarray,
    rows: np.ndarray | None = None,
    dtype: type = np.float64,
) -> np.ndarray:
    """``np.sum(transform(X[rows]), axis=0, dtype=dtype)``, a block at a time.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    transform : callable
        Applied to each block of rows (elementwise or row by row).
    rows : ndarray of int, optional
        The rows to sum, in this order (default: all of them).
    dtype : type
        The accumulator's.
    """
    if X.shape[1] == 1 or (rows is None and not X.flags.c_contiguous):
        # One column, or a Fortran-ordered matrix: numpy sums each column as one
        # contiguous run, pairwise. The one-shot sum is the number, and its temporary is
        # a column (or the whole of a rare layout).
        return np.asarray(np.sum(transform(X if rows is None else X[rows]), axis=0, dtype=dtype))
    n = X.shape[0] if rows is None else len(rows)
    total: np.ndarray | None = None
    for start in range(0, n, BLOCK_ROWS):
        stop = start + BLOCK_ROWS
        part = transform(X[start:stop] if rows is None else X[rows[start:stop]])
        if total is not None:
            part = np.vstack([total[None, :], part])
        total = np.asarray(np.sum(part, axis=0, dtype=dtype))
    if total is None:
        return np.zeros(X.shape[1], dtype=dtype)
    return total


def fit_scaler(X: np.ndarray) -> tuple[np.ndarray, StandardScaler]:
    """``StandardScaler().fit_transform(X)`` and the fitted scaler, with the scaled copy
    the only array of the matrix's size made.

    The statistics are those of scikit-learn's ``_incremental_mean_and_var`` (the
    corrected two-pass algorithm) on a first fit; the scale that of
    ``StandardScaler.partial_fit``; the copy keeps ``X``'s floating dtype as
    ``transform`` does (float64 for anything else).
    """
    from sklearn.preprocessing import StandardScaler
    from sklearn.preprocessing._data import _handle_zeros_in_scale, _is_constant_feature

    n_samples, n_features = X.shape
    mean = column_sum(X) / n_samples
    correction = column_sum(X, lambda block: block - mean)
    squares = column_sum(X, lambda block: (block - mean) ** 2)
    squares -= correction**2 / n_samples
    var = squares / n_samples
    scaler = StandardScaler()
    scaler.n_features_in_ = n_features
    scaler.n_samples_seen_ = np.int64(n_samples)
    scaler.mean_ = mean
    scaler.var_ = var
    scaler.scale_ = _handle_zeros_in_scale(
        np.sqrt(var), copy=False, constant_mask=_is_constant_feature(var, mean, n_samples)
    )
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    scaled = np.empty(X.shape, dtype=dtype)
    shift, scale = mean.astype(dtype), scaler.scale_.astype(dtype)
    for start in range(0, n_samples, BLOCK_ROWS):
        block = scaled[start : start + BLOCK_ROWS]
        block[...] = X[start : start + BLOCK_ROWS]
        block -= shift
        block /= scale
        # A memory-mapped X gives back each block's pages as the copy takes them: the
        # two are resident together a block at a time, not whole.
        release_pages(X[start : start + BLOCK_ROWS])
    return scaled, scaler


def distances_to_centers(
    X: np.ndarray,
    labels: np.ndarray,
    centers: np.ndarray,
    transform: Callable[[np.ndarray], np.ndarray] = np.asarray,
) -> np.ndarray:
    """Each row's Euclidean distance to its own centre, in the space ``transform`` maps
    the rows to (the fitted steps before the estimator), in float64."""
    out = np.empty(X.shape[0])
    center_norms = (centers**2).sum(axis=1)
    step = block_rows(X)
    for start in range(0, X.shape[0], step):
        stop = start + step
        own = labels[start:stop]
        if is_sparse(X):
            # |z - c|^2 = |z|^2 - 2 z.c + |c|^2, with z sparse: nothing dense of z's size.
            Z: Any = X[start:stop] if transform is np.asarray else transform(X[start:stop])
            Z = Z.astype(np.float64, copy=False)
            norms = np.asarray(Z.multiply(Z).sum(axis=1)).ravel()
            dots = np.asarray(Z @ centers.T)[np.arange(Z.shape[0]), own]
            out[start:stop] = np.sqrt(np.maximum(norms - 2 * dots + center_norms[own], 0.0))
            release_rows(X, start, stop)
            continue
        block = np.asarray(transform(X[start:stop]), dtype=np.float64)
        out[start:stop] = np.sqrt(((block - centers[own]) ** 2).sum(1))
    return out


def profile_clusters(
    X: np.ndarray, labels: np.ndarray, n_clusters: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each cluster's size, and its rows' per-feature mean and standard deviation.

    As ``pandas.DataFrame(X).groupby(labels)`` computes them: the standard deviation
    with ``ddof=1``, NaN for a cluster of fewer than two rows (the mean too when empty).
    The numbers are those of ``X[rows].mean(axis=0)`` and ``.std(axis=0, ddof=1)``.

    Returns
    -------
    sizes : ndarray of shape (n_clusters,)
    means, stds : ndarrays of shape (n_clusters, n_features)
    """
    if is_sparse(X):
        # Sums of rows and of squares: the same numbers to rounding, never dense.
        sizes, sums, squares = _sparse_sums(X, labels, n_clusters)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / sizes[:, None]
            spread = np.maximum(squares - sizes[:, None] * means**2, 0.0)
            stds = np.sqrt(spread / (sizes[:, None] - 1))
        means[sizes == 0] = np.nan
        stds[sizes < 2] = np.nan
        return sizes, means, stds
    sizes = np.bincount(labels, minlength=n_clusters)
    means = np.full((n_clusters, X.shape[1]), np.nan)
    stds = np.full((n_clusters, X.shape[1]), np.nan)
    order = np.argsort(labels, kind="stable")
    for label, rows in enumerate(np.split(order, np.cumsum(sizes)[:-1])):
        if len(rows):
            means[label] = column_sum(X, _as_float64, rows) / len(rows)
            if len(rows) > 1:
                squares = column_sum(X, _squares_about(means[label]), rows)
                stds[label] = np.sqrt(squares / (len(rows) - 1))
    return sizes, means, stds


def calinski_harabasz_score(X: np.ndarray, labels: np.ndarray) -> float:
    """``sklearn.metrics.calinski_harabasz_score(X, labels)``, without its float64 copy
    of ``X`` (twice float32 data) and the copy of each cluster's rows.

    Each cluster's sum of squares is a sum over the flattened rows, which numpy adds
    pairwise: :func:`_pairwise_sum` splits it where numpy's recursion does, and sums the
    leaves with numpy, so the total is the same number.
    """
    labels = np.asarray(labels)
    present = np.unique(labels)
    if not 1 < len(present) < X.shape[0]:
        raise ValueError(
            f"Number of labels is {len(present)}. Valid values are 2 to n_samples - 1 (inclusive)"
        )
    n_samples, n_features = X.shape
    if is_sparse(X):
        return _sparse_calinski_harabasz(X, labels, present)
    mean = column_sum(X, _as_float64) / n_samples
    extra_disp, intra_disp = 0.0, 0.0
    for label in present:
        rows = np.flatnonzero(labels == label)
        mean_k = column_sum(X, _as_float64, rows) / len(rows)
        extra_disp += len(rows) * np.sum((mean_k - mean) ** 2)
        squares = _squares_about(mean_k)

        def leaf(lo: int, hi: int, rows: np.ndarray = rows, squares: Squares = squares) -> Any:
            first, last = lo // n_features, -(-hi // n_features)
            flat = squares(X[rows[first:last]]).ravel()
            return flat[lo - first * n_features : hi - first * n_features]

        intra_disp += _pairwise_sum(leaf, 0, len(rows) * n_features)
    n_labels = len(present)
    return float(
        1.0
        if intra_disp == 0.0
        else extra_disp * (n_samples - n_labels) / (intra_disp * (n_labels - 1.0))
    )


def _sparse_calinski_harabasz(X: Any, labels: np.ndarray, present: np.ndarray) -> float:
    """Calinski-Harabasz on sparse data, from each cluster's sums (scikit-learn's takes
    dense data only): the within-cluster dispersion is the sum of squares minus each
    cluster's size times its squared mean."""
    codes = np.searchsorted(present, labels)
    sizes, sums, squares = _sparse_sums(X, codes, len(present))
    n_samples, n_labels = X.shape[0], len(present)
    mean = sums.sum(axis=0) / n_samples
    means = sums / sizes[:, None]
    extra_disp = float(np.sum(sizes * ((means - mean) ** 2).sum(axis=1)))
    intra_disp = float(np.sum(squares) - np.sum(sizes * (means**2).sum(axis=1)))
    if intra_disp <= 0.0:
        return 1.0
    return float(extra_disp * (n_samples - n_labels) / (intra_disp * (n_labels - 1.0)))


def davies_bouldin_score(X: Any, labels: np.ndarray) -> float:
    """``sklearn.metrics.davies_bouldin_score``; on sparse data (which scikit-learn's
    refuses) the same formula from each row's distance to its centroid, computed as
    ``|x|^2 - 2 x.c + |c|^2`` so that nothing of X's size is made dense."""
    if not is_sparse(X):
        from sklearn.metrics import davies_bouldin_score as dense

        return float(dense(X, labels))
    labels = np.asarray(labels)
    present = np.unique(labels)
    if not 1 < len(present) < X.shape[0]:
        raise ValueError(
            f"Number of labels is {len(present)}. Valid values are 2 to n_samples - 1 (inclusive)"
        )
    codes = np.searchsorted(present, labels)
    sizes, sums, _ = _sparse_sums(X, codes, len(present))
    centroids = sums / sizes[:, None]
    distances = distances_to_centers(X, codes, centroids)
    intra = np.bincount(codes, weights=distances, minlength=len(present)) / sizes
    # Each centroid's distance to every other, one centroid at a time: all the pairs'
    # differences at once are n_clusters times the centroids, twice (8 clusters of 50,000
    # columns: 51 MB). Each row is summed as numpy sums the pairs' last axis.
    gaps = np.array([np.sqrt(((centroid - centroids) ** 2).sum(axis=1)) for centroid in centroids])
    if np.allclose(intra, 0) or np.allclose(gaps, 0):
        return 0.0
    gaps[gaps == 0] = np.inf
    combined = intra[:, None] + intra
    return float(np.mean(np.max(combined / gaps, axis=1)))


# The longest run _pairwise_sum hands to numpy at once (8 MB of float64); at least
# numpy's own shortest run, 128 values, which it adds with eight accumulators.
_PAIRWISE_LEAF = 1 << 20


def _pairwise_sum(values: Callable[[int, int], np.ndarray], lo: int, hi: int) -> float:
    """``np.sum`` of the float64 values ``values(lo, hi)`` would give, for a range
    too large to hold at once: numpy's pairwise summation halves a run at a multiple of
    8 until it is short, so a range is the sum of its two halves' sums."""
    n = hi - lo
    if n <= _PAIRWISE_LEAF:
        return np.sum(values(lo, hi))  # type: ignore[no-any-return]
    half = n // 2
    half -= half % 8
    return _pairwise_sum(values, lo, lo + half) + _pairwise_sum(values, lo + half, hi)


def _as_float64(block: np.ndarray) -> np.ndarray:
    return block.astype(np.float64)


def _squares_about(mean: np.ndarray) -> Squares:
    def squares(block: np.ndarray) -> np.ndarray:
        deviations: np.ndarray = block.astype(np.float64) - mean
        return deviations**2

    return squares


def release_rows(X: Any, start: int, stop: int) -> None:
    """Give back the resident pages of the stored values and column indices of rows
    ``start`` to ``stop`` of a CSR ``X`` over memory-mapped arrays (:func:`release_pages`):
    a pass over sparse data that reads each block once then holds a block of them, not
    all of them, beside what it computes. A no-op on dense data and arrays in memory."""
    if not is_sparse(X):
        return
    first, last = int(X.indptr[start]), int(X.indptr[min(stop, X.shape[0])])
    release_pages(X.data[first:last])
    release_pages(X.indices[first:last])


def release_pages(X: np.ndarray) -> None:
    """Give back the resident pages of a memory-mapped ``X`` (they stay in the page cache
    and are read again from there if touched): the worker then holds the scaled copy
    alone while KMeans runs. ``X`` may be a contiguous slice of the mapping: only the
    pages it covers whole are given back. A no-op on arrays in memory."""
    base: object = X
    while isinstance(base, np.ndarray) and not isinstance(base, np.memmap):
        base = base.base
    mapped = getattr(base, "_mmap", None)
    if not isinstance(mapped, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    if not X.flags.c_contiguous:
        mapped.madvise(mmap.MADV_DONTNEED)
        return
    # A slice of a memory map is itself an np.memmap over the whole mapping: its own
    # pages are found from its address.
    origin = np.frombuffer(mapped, dtype=np.uint8).ctypes.data
    first = X.ctypes.data - origin
    page = mmap.PAGESIZE
    start = -(-first // page) * page
    stop = (first + X.nbytes) // page * page
    if stop > start:
        mapped.madvise(mmap.MADV_DONTNEED, start, stop - start)
