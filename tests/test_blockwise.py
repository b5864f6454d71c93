"""The block-wise statistics equal, bit for bit, the one-shot code they replace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from service import blockwise, kmeans_patches
from tests.helpers import traced_peak


@pytest.fixture(params=[7, 1 << 15], ids=["blocks-of-7", "default-blocks"])
def block_rows(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Small blocks make every function run over many blocks on small data."""
    monkeypatch.setattr(blockwise, "BLOCK_ROWS", request.param)
    return int(request.param)


def _table(n: int, dtype: type) -> np.ndarray:
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, 9)) * rng.uniform(0.01, 1e3, 9) + rng.uniform(-1e4, 1e4, 9)
    X[:, 2] = 7.25  # a constant column: scale 1, as scikit-learn handles it
    X[:, 4] = 0.0
    return X.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("n", [1, 50, 1797])
def test_fit_scaler_equals_standard_scaler(block_rows: int, dtype: type, n: int) -> None:
    X = _table(n, dtype)
    expected = StandardScaler()
    Z_expected = expected.fit_transform(X)

    Z, scaler = blockwise.fit_scaler(X)

    assert Z.dtype == Z_expected.dtype
    assert np.array_equal(Z, Z_expected)
    for name in ("mean_", "var_", "scale_"):
        assert np.array_equal(getattr(scaler, name), getattr(expected, name)), name
    assert scaler.n_samples_seen_ == expected.n_samples_seen_
    assert np.array_equal(scaler.transform(X[:5]), expected.transform(X[:5]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_profile_clusters_equals_group_means(block_rows: int, dtype: type) -> None:
    X = _table(1000, dtype)
    labels = np.random.default_rng(3).integers(0, 5, len(X))
    labels[labels == 3] = 4  # an empty cluster
    labels[0] = 3  # ... now a cluster of one row

    sizes, means, stds = blockwise.profile_clusters(X, labels, 6)

    assert sizes.tolist() == np.bincount(labels, minlength=6).tolist()
    for label in range(6):
        members = np.asarray(X[labels == label], dtype=np.float64)
        if len(members) == 0:
            assert np.isnan(means[label]).all()
            assert np.isnan(stds[label]).all()
            continue
        assert np.array_equal(means[label], members.mean(axis=0))
        if len(members) == 1:
            assert np.isnan(stds[label]).all()
        else:
            assert np.array_equal(stds[label], members.std(axis=0, ddof=1))


def test_distances_to_centers_equal_the_whole_matrix(block_rows: int) -> None:
    X = _table(500, np.float32)
    scaler = StandardScaler().fit(X)
    centers = np.random.default_rng(4).standard_normal((4, X.shape[1]))
    labels = np.random.default_rng(5).integers(0, 4, len(X))

    own = blockwise.distances_to_centers(X, labels, centers, scaler.transform)

    Z = np.asarray(scaler.transform(X), dtype=np.float64)
    assert np.array_equal(own, np.sqrt(((Z - centers[labels]) ** 2).sum(1)))


def test_release_pages_keeps_the_data(tmp_path) -> None:  # type: ignore[no-untyped-def]
    X = _table(2000, np.float64)
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    assert np.array_equal(mapped, X)

    blockwise.release_pages(mapped)
    blockwise.release_pages(mapped[10:20])  # a view of the mapping
    blockwise.release_pages(X)  # in memory: nothing to give back

    assert np.array_equal(mapped, X)


def _resident_kib(path: Path) -> int:
    """The resident KiB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, counting = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            counting = fields[-1] == str(path)
        elif counting and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_fit_scaler_gives_back_the_mapped_pages_as_it_copies(tmp_path: Path) -> None:
    # Check that scaling a memory-mapped X gives back each block's pages once it is
    # copied: the data and its scaled copy are resident together a block at a time, not
    # whole (the scaled copy is the same as the one-shot scaler's).
    X = _table(40_000, np.float32)
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="c")
    assert np.array_equal(mapped, X)
    assert _resident_kib(tmp_path / "X.npy") * 1024 >= X.nbytes  # all read in

    Z, _ = blockwise.fit_scaler(mapped)

    assert _resident_kib(tmp_path / "X.npy") * 1024 < X.nbytes / 10
    assert np.array_equal(Z, StandardScaler().fit_transform(X))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_labels", [2, 7])
def test_calinski_harabasz_equals_scikit_learn(
    monkeypatch: pytest.MonkeyPatch, block_rows: int, dtype: type, n_labels: int
) -> None:
    from sklearn.metrics import calinski_harabasz_score

    # numpy's own shortest run (128 values): every cluster's sum runs over many levels
    # of the recursion.
    monkeypatch.setattr(blockwise, "_PAIRWISE_LEAF", 128)
    X = _table(3000, dtype)
    labels = np.random.default_rng(n_labels).integers(0, n_labels, len(X)) * 3  # not 0..k-1

    assert blockwise.calinski_harabasz_score(X, labels) == calinski_harabasz_score(X, labels)


def test_calinski_harabasz_refuses_as_scikit_learn() -> None:
    X = _table(10, np.float64)
    with pytest.raises(ValueError, match="Number of labels is 1"):
        blockwise.calinski_harabasz_score(X, np.zeros(10, dtype=int))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_features", [1, 9])
@pytest.mark.parametrize("order", ["C", "F"])
def test_kmeans_tolerance_equals_scikit_learn(
    block_rows: int, dtype: type, n_features: int, order: str
) -> None:
    from sklearn.cluster._kmeans import _tolerance

    X = np.asarray(_table(3001, dtype)[:, :n_features], order=order)

    assert kmeans_patches.kmeans_tolerance(X, 1e-4) == _tolerance(X, 1e-4)
    assert kmeans_patches.kmeans_tolerance(X, 0) == 0


def test_kmeans_tolerance_on_sparse_data_is_scikit_learns() -> None:
    from scipy import sparse
    from sklearn.cluster._kmeans import _tolerance

    X = sparse.random(200, 30, density=0.1, format="csr", random_state=0)

    assert kmeans_patches.kmeans_tolerance(X, 1e-3) == _tolerance(X, 1e-3)


def test_lean_kmeans_is_used_by_the_fit_and_put_back() -> None:
    from sklearn.cluster import KMeans, _k_means_common, _kmeans

    originals = _kmeans._tolerance, _k_means_common.np
    X = _table(400, np.float32)
    expected = KMeans(n_clusters=3, n_init=1, random_state=0).fit(X)
    with kmeans_patches.lean_kmeans():
        assert _kmeans._tolerance is kmeans_patches.kmeans_tolerance
        assert _k_means_common.np is not np
        fitted = KMeans(n_clusters=3, n_init=1, random_state=0).fit(X)
    assert (_kmeans._tolerance, _k_means_common.np) == originals
    assert fitted._tol == expected._tol
    assert np.array_equal(fitted.cluster_centers_, expected.cluster_centers_)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_features", [1, 3, 64])
def test_block_rows_give_each_rows_distance_as_numpy_does(
    block_rows: int, dtype: type, n_features: int
) -> None:
    # The relocation's line, as scikit-learn's Cython runs it (labels a memoryview).
    rng = np.random.default_rng(n_features)
    X = rng.standard_normal((1000, n_features)).astype(dtype) * 1e3
    centers = rng.standard_normal((5, n_features)).astype(dtype)
    labels = memoryview(rng.integers(5, size=1000).astype(np.int32))
    expected = ((np.asarray(X) - np.asarray(centers)[labels]) ** 2).sum(axis=1)

    lean = kmeans_patches._RELOCATION_NUMPY
    distances = ((lean.asarray(X) - lean.asarray(centers)[labels]) ** 2).sum(axis=1)

    assert distances.dtype == expected.dtype
    assert np.array_equal(distances, expected)
    # Anything else is plain numpy.
    assert np.array_equal(np.asarray(lean.asarray(X)[:3]), X[:3])
    assert np.array_equal(lean.asarray(X) - 1.0, X - 1.0)
    assert lean.asarray(X).shape == X.shape
    assert lean.argpartition is np.argpartition


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_emptied_cluster_is_relocated_without_copies_of_the_data(dtype: type) -> None:
    # Check that under lean_kmeans the fit is scikit-learn's to the bit and that the
    # relocation of an emptied cluster (one start far from every row: its cluster is
    # empty after the first assignment) makes no array of the data's size: scikit-learn
    # alone makes two (X - centers[labels] and its square).
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(4)
    X = (rng.standard_normal((240_000, 16)) + rng.integers(4, size=(240_000, 1)) * 8).astype(dtype)
    init = np.vstack([X[:3], np.full((1, 16), 1e4)]).astype(dtype)

    def fit() -> tuple[KMeans, float]:
        data = X.copy()
        fitted, peak = traced_peak(lambda: KMeans(4, init=init, n_init=1, copy_x=False).fit(data))
        return fitted, peak / X.nbytes

    expected, plain_peak = fit()
    with kmeans_patches.lean_kmeans():
        fitted, lean_peak = fit()

    assert plain_peak >= 2.0  # the relocation happened, the way scikit-learn makes it
    assert lean_peak < 1.0
    assert np.array_equal(fitted.cluster_centers_, expected.cluster_centers_)
    assert np.array_equal(fitted.labels_, expected.labels_)
    assert (fitted.inertia_, fitted.n_iter_) == (expected.inertia_, expected.n_iter_)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_sparse_columns_equals_the_scalers_transform(tmp_path, dtype: type) -> None:  # type: ignore[no-untyped-def]
    from scipy import sparse

    X = sparse.random(3000, 400, density=0.02, format="csr", random_state=3, dtype=dtype)
    np.save(tmp_path / "data.npy", X.data)
    data = np.load(tmp_path / "data.npy", mmap_mode="r")
    stored = sparse.csr_matrix((data, X.indices, X.indptr), shape=X.shape)
    scaler = StandardScaler(with_mean=False).fit(stored)

    Z = blockwise.scale_sparse_columns(stored, 1 / scaler.scale_)

    want = scaler.transform(X)
    assert Z.dtype == want.dtype == dtype
    assert np.array_equal(Z.data, want.data)
    # Only the values are new; the stored values are untouched by giving back pages.
    assert np.shares_memory(Z.indices, stored.indices)
    assert np.shares_memory(Z.indptr, stored.indptr)
    assert np.array_equal(stored.data, X.data)


def test_sparse_statistics_in_blocks_equal_the_dense_ones(block_rows: int) -> None:
    from scipy import sparse

    X = sparse.random(700, 60, density=0.1, format="csr", random_state=5)
    dense = X.toarray()
    labels = np.random.default_rng(6).integers(0, 4, X.shape[0])
    centers = np.random.default_rng(7).standard_normal((4, X.shape[1]))
    scaler = StandardScaler(with_mean=False).fit(X)
    assert blockwise.block_rows(X) < X.shape[0] or block_rows > 7

    for got, want in zip(
        blockwise.profile_clusters(X, labels, 4),
        blockwise.profile_clusters(dense, labels, 4),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        blockwise.distances_to_centers(X, labels, centers, scaler.transform),
        blockwise.distances_to_centers(dense, labels, centers, scaler.transform),
        rtol=1e-9,
    )


def _tfidf(n_samples: int, n_features: int, seed: int) -> Any:
    from scipy import sparse
    from sklearn.preprocessing import normalize

    rng = np.random.default_rng(seed)
    return normalize(sparse.random(n_samples, n_features, density=0.002, format="csr", rng=rng))


def test_the_sparse_dot_untransposed_is_scikit_learns() -> None:
    from sklearn.utils.extmath import safe_sparse_dot

    X = _tfidf(3000, 2000, 1)
    candidates = X[[5, 17, 2999]]
    expected = safe_sparse_dot(candidates, X.T, dense_output=True)

    product = kmeans_patches.sparse_dot_untransposed(
        safe_sparse_dot, candidates, X.T, dense_output=True
    )

    assert product.flags.c_contiguous
    assert np.array_equal(product, expected)
    # Anything else is scikit-learn's own.
    calls: list[Any] = []
    kmeans_patches.sparse_dot_untransposed(lambda *a, **k: calls.append(a), X, X.T)
    unsorted = X.copy()
    for row in range(unsorted.shape[0]):  # each row's columns in reverse order
        start, stop = unsorted.indptr[row], unsorted.indptr[row + 1]
        unsorted.indices[start:stop] = unsorted.indices[start:stop][::-1].copy()
        unsorted.data[start:stop] = unsorted.data[start:stop][::-1].copy()
    unsorted.has_sorted_indices = False
    kmeans_patches.sparse_dot_untransposed(
        lambda *a, **k: calls.append(a), candidates, unsorted.T, dense_output=True
    )
    assert len(calls) == 2


def test_k_means_plus_plus_on_sparse_data_makes_no_transposed_copy() -> None:
    # Check that under lean_kmeans k-means++ on CSR data fits as scikit-learn does, to
    # the bit, without the transposed copy of X that scipy made for each centre.
    from sklearn.cluster import KMeans

    X = _tfidf(60_000, 30_000, 2)
    stored = X.data.nbytes + X.indices.nbytes

    def fit() -> tuple[KMeans, int]:
        return traced_peak(lambda: KMeans(8, init="k-means++", n_init=1, random_state=0).fit(X))

    expected, plain_peak = fit()
    with kmeans_patches.lean_kmeans():
        fitted, lean_peak = fit()

    assert plain_peak >= stored  # the copy was made, the way scipy makes it
    assert lean_peak < plain_peak - 0.8 * stored
    assert np.array_equal(fitted.cluster_centers_, expected.cluster_centers_)
    assert np.array_equal(fitted.labels_, expected.labels_)
    assert (fitted.inertia_, fitted.n_iter_) == (expected.inertia_, expected.n_iter_)


def test_scaling_sparse_columns_makes_little_beside_the_copy() -> None:
    # Check that the scaled copy of the values is about all that scaling makes: the
    # column factors of a block of 2 million values were 32 MB more.
    X = _tfidf(100_000, 20_000, 6)
    factor = np.linspace(0.5, 2.0, X.shape[1])
    Z, peak = traced_peak(lambda: blockwise.scale_sparse_columns(X, factor))
    assert peak < 1.25 * Z.data.nbytes


def test_davies_bouldin_on_wide_sparse_data_makes_no_pairs_of_centroids() -> None:
    # Check that the sparse Davies-Bouldin (scikit-learn's refuses sparse data) equals the
    # dense score and makes nothing of n_clusters x n_clusters x n_features: for 8
    # clusters of 60,000 columns the pairs' differences were 16 times the centroids.
    from sklearn.metrics import davies_bouldin_score

    X = _tfidf(2000, 60_000, 7)
    labels = np.random.default_rng(8).integers(0, 8, X.shape[0])
    centroid_bytes = 8 * X.shape[1] * 8

    score, peak = traced_peak(lambda: blockwise.davies_bouldin_score(X, labels))

    assert peak < 8 * centroid_bytes
    assert score == pytest.approx(davies_bouldin_score(X.toarray(), labels), rel=1e-9)


def test_the_passes_over_stored_sparse_data_hold_a_block_of_it(tmp_path: Path) -> None:
    # Check that scoring, profiling and measuring distances on a memory-mapped CSR matrix
    # give back its stored values and indices a block at a time: they stayed resident
    # whole beside what each pass computed (and the numbers are the same as in memory).
    from scipy import sparse

    from service.benchmark.kernel import score_labels

    X = _tfidf(20_000, 5_000, 9)
    for name in ("data", "indices"):
        np.save(tmp_path / f"{name}.npy", getattr(X, name))
    stored = {
        name: np.load(tmp_path / f"{name}.npy", mmap_mode="c") for name in ("data", "indices")
    }
    mapped = sparse.csr_matrix((stored["data"], stored["indices"], X.indptr), shape=X.shape)
    labels = np.random.default_rng(10).integers(0, 5, X.shape[0])
    centers = np.random.default_rng(11).random((5, X.shape[1]))

    def resident() -> int:
        return sum(_resident_kib(tmp_path / f"{name}.npy") * 1024 for name in stored)

    scores = score_labels(mapped, None, labels, 300, 0)
    assert resident() < (X.data.nbytes + X.indices.nbytes) / 10
    profiles = blockwise.profile_clusters(mapped, labels, 5)
    own = blockwise.distances_to_centers(mapped, labels, centers)
    assert resident() < (X.data.nbytes + X.indices.nbytes) / 10

    assert scores == score_labels(X, None, labels, 300, 0)
    for got, want in zip(profiles, blockwise.profile_clusters(X, labels, 5), strict=True):
        assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(own, blockwise.distances_to_centers(X, labels, centers))
