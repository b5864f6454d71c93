"""Sparse uploads (API.md Part 3 "Sparse data"): libsvm text and ``save_npz`` files are
read, bounded and stored as CSR arrays, never densified, and described with their density."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import scipy.sparse
from sklearn.datasets import dump_svmlight_file, load_svmlight_file

from service.datasets import SPARSE_FILES, csr_arrays, load_arrays
from service.errors import PayloadTooLargeError
from service.formats import Bounds, check_sparse_size
from tests.conftest import make_settings, serve
from tests.uploads import (
    assert_problem,
    npy_bytes,
    npy_header,
    patch_directory,
    post,
    zip_bytes,
)

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
    # Copy-on-write views of the mapped files, not copies: scikit-learn's Cython takes
    # them as writable buffers, and a write never reaches the stored file.
    for array in (loaded.data, loaded.indices, loaded.indptr):
        assert not array.flags.owndata
        while not isinstance(array, np.memmap):
            array = array.base
        assert array.filename is not None
        assert array.mode == "c"
    assert np.array_equal(loaded.toarray(), dense)
    loaded.data[0] = 99.0
    assert np.load(tmp_path / SPARSE_FILES[0]).tolist() == X.data.tolist()
    assert y is not None
    assert y.tolist() == [0, 1, 1]


# -- Uploads --------------------------------------------------------------------------------

LIBSVM = "text/x-libsvm"
SPARSE = "application/x-scipy-sparse"
# A small TF-IDF-like matrix: 40 rows, 300 columns, about 2 % stored, integer targets.
_LIL = scipy.sparse.random(40, 300, density=0.02, format="lil", random_state=3, dtype=float)
# libsvm's width is its largest index, and "auto" reads it zero-based when a 0 is there.
_LIL[0, 0] = _LIL[1, 299] = 0.25
MATRIX = _LIL.tocsr()
MATRIX.data = np.round(MATRIX.data, 6)  # exact through libsvm's text
TARGETS = np.arange(40) % 3


def libsvm_bytes(X: scipy.sparse.csr_matrix, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    dump_svmlight_file(X, y, buffer, zero_based=True)
    return buffer.getvalue()


def save_npz_bytes(X: scipy.sparse.spmatrix, **options: bool) -> bytes:
    buffer = io.BytesIO()
    scipy.sparse.save_npz(buffer, X, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
async def sparse_client(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    """The app on its own data directory (its stored files are looked at), with bounds a
    small file can pass: 10,000 stored values, 1 MB stored, 1,000 sparse features."""
    data_dir = tmp_path_factory.mktemp("sparse")
    settings = make_settings(
        data_dir,
        workers=1,
        max_cells=10_000,
        max_dataset_bytes=1_000_000,
        max_sparse_features=1_000,
    )
    async with serve(settings) as client:
        yield client, data_dir / "datasets"


def assert_same_csr(X: scipy.sparse.csr_matrix, expected: scipy.sparse.csr_matrix) -> None:
    """The same canonical CSR arrays (the stored form), whatever their index width."""
    assert X.shape == expected.shape
    for found, wanted in zip(csr_arrays(X), csr_arrays(expected), strict=True):
        assert np.array_equal(found, wanted)


async def listed(client: httpx.AsyncClient) -> set[str]:
    return {d["id"] for d in (await client.get("/v1/datasets")).json()["datasets"]}


async def test_libsvm_and_save_npz_store_one_sparse_dataset(
    sparse_client: tuple[httpx.AsyncClient, Path],
) -> None:
    # Check that the same matrix sent as libsvm text, as a CSR save_npz, as a CSC one and
    # as an .npz file named so in a form is stored once, sparse (CSR arrays, no X.npy),
    # described with its density, and loads back equal to what scikit-learn's reader and
    # SciPy give; the labels only come with libsvm's targets.
    client, root = sparse_client
    response, _ = await post(client, LIBSVM, libsvm_bytes(MATRIX, TARGETS))
    assert response.status_code == 201, response.text
    described = response.json()
    dataset_id = described["id"]
    assert described["format"] == "libsvm"
    assert described["sparse"] is True
    assert described["density"] == pytest.approx(MATRIX.nnz / (40 * 300), rel=1e-12)
    assert (described["n_samples"], described["n_features"]) == (40, 300)
    assert described["has_labels"] is True
    assert (await client.get(f"/v1/datasets/{dataset_id}")).json() == {
        **described,
        "warnings": [],
    }
    folder = root / dataset_id
    assert not (folder / "X.npy").exists()
    X, y = load_arrays(folder / "X.npy", folder / "y.npy")
    expected, targets = load_svmlight_file(io.BytesIO(libsvm_bytes(MATRIX, TARGETS)))
    assert np.array_equal(X.toarray(), expected.toarray())
    assert_same_csr(X, MATRIX)
    assert y is not None
    assert y.tolist() == targets.astype(int).tolist()

    ids = set()
    for status, content in (
        (201, save_npz_bytes(MATRIX)),
        (200, save_npz_bytes(MATRIX.tocsc(), compressed=False)),
    ):
        response, _ = await post(client, SPARSE, content)
        assert response.status_code == status, response.text
        assert response.json()["sparse"] is True
        assert response.json()["format"] == "scipy-sparse"
        ids.add(response.json()["id"])
    files = {"file": ("tfidf.npz", save_npz_bytes(MATRIX), "application/octet-stream")}
    response = await client.post("/v1/datasets", files=files)
    assert response.status_code == 200, response.text
    assert response.json()["format"] == "scipy-sparse"
    ids.add(response.json()["id"])
    assert len(ids) == 1
    assert dataset_id not in ids  # the labels are part of the id
    [sparse_id] = ids
    X, y = load_arrays(root / sparse_id / "X.npy", None)
    assert_same_csr(X, MATRIX)
    files = {"file": ("tfidf.svm", libsvm_bytes(MATRIX, TARGETS), "application/octet-stream")}
    response = await client.post("/v1/datasets", files=files)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == dataset_id


async def test_one_matrix_one_id_however_it_is_written(
    sparse_client: tuple[httpx.AsyncClient, Path],
) -> None:
    # Check that a CSR matrix with its indices unsorted, a value split in two duplicates
    # and an explicit zero is stored in canonical form, under the id of the same matrix
    # written canonically; and that float32 values stay float32 (another id).
    client, root = sparse_client
    canonical = scipy.sparse.csr_matrix(np.array([[0, 2.0, 0, 1.0], [3.0, 0, 0, 0]]))
    messy = scipy.sparse.csr_matrix(
        (np.array([1.0, 0.0, 1.5, 0.5, 3.0]), np.array([3, 0, 1, 1, 0]), np.array([0, 4, 5])),
        shape=(2, 4),
    )
    first, _ = await post(client, SPARSE, save_npz_bytes(canonical))
    again, _ = await post(client, SPARSE, save_npz_bytes(messy))
    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["density"] == 3 / 8
    X, _ = load_arrays(root / first.json()["id"] / "X.npy", None)
    assert_same_csr(X, canonical)
    single, _ = await post(client, SPARSE, save_npz_bytes(canonical.astype(np.float32)))
    assert single.status_code == 201, single.text
    assert single.json()["dtype"] == "float32"


async def test_dense_data_says_it_is_not_sparse(client: httpx.AsyncClient) -> None:
    # Check that a dense upload's description says "sparse": false and has no density.
    response, _ = await post(client, "application/json", b'{"X": [[0, 1], [2, 3], [4, 5]]}')
    assert response.status_code in (200, 201), response.text
    described = (await client.get(f"/v1/datasets/{response.json()['id']}")).json()
    assert described["sparse"] is False
    assert "density" not in described


# -- Bad input: a clear 4xx naming what and where, and nothing stored ------------------------

GOOD_LINES = b"0 1:0.5 7:2\n1 2:1.5\n"
BAD_LIBSVM = [
    (b"0 1:0.5 -3:2\n1 2:1\n", "line 1", "'-3:2' has a negative index"),
    (b"0 1:0.5\n1 2.5:1\n", "line 2", "'2.5:1' has an index that is not an integer"),
    (
        b"0 1:0.5\n1 4:1 2:3\n",
        "line 2",
        "'2:3' has an index not greater than the one before",
    ),
    (b"0 1:0.5 3:3\n1 3:1 3:2\n", "line 2", "'3:2' has an index not greater"),
    (GOOD_LINES + b"1 2:abc\n", "line 3", "'2:abc' has a value that is not a number"),
    (GOOD_LINES + b"1 2:\n", "line 3", "'2:' has a value that is not a number"),
    (GOOD_LINES + b"1 5 2:1\n", "line 3", "'5' is not an index:value pair"),
    (GOOD_LINES + b"1:1 2:1\n", "line 3", "'1:1' is not a target"),
    (GOOD_LINES + b"1 qid:4 2:1\n", "line 3", "has a qid"),
    (GOOD_LINES + b"1.5 2:1\n", "row 2", "targets are read as labels and must be integers"),
    (GOOD_LINES + b"1 2:inf\n", "row 2, column 1", "infinity"),
]


@pytest.mark.parametrize(("content", "where", "what"), BAD_LIBSVM)
async def test_bad_libsvm_line_is_422_naming_the_line(
    sparse_client: tuple[httpx.AsyncClient, Path], content: bytes, where: str, what: str
) -> None:
    # Check that a libsvm line with a bad index (negative, not an integer, not increasing),
    # a value that is not a number, a token that is not a pair, a missing target, a qid,
    # a fractional target or an infinite value is a 422 naming the line (or row) and what
    # is wrong, and that nothing is stored.
    client, _ = sparse_client
    before = await listed(client)
    response, _ = await post(client, LIBSVM, content)
    assert_problem(response, 422, where, what)
    assert await listed(client) == before


async def test_libsvm_past_the_bounds_is_413(
    sparse_client: tuple[httpx.AsyncClient, Path],
) -> None:
    # Check that libsvm text with more index:value pairs than the stored values allowed
    # (counted from the text before parsing), or with an index past max_sparse_features,
    # is 413 naming the bound, and that nothing is stored.
    client, _ = sparse_client
    before = await listed(client)
    many = b"".join(
        b"%d " % (i % 2) + b" ".join(b"%d:1" % j for j in range(1, 501)) + b"\n" for i in range(25)
    )
    response, _ = await post(client, LIBSVM, many)
    assert_problem(response, 413, "may store 12,500 values", "CLUSTERBENCH_MAX_CELLS")
    response, _ = await post(client, LIBSVM, GOOD_LINES + b"1 5000000:1\n")
    assert_problem(response, 413, "5,000,000 features", "CLUSTERBENCH_MAX_SPARSE_FEATURES")
    assert await listed(client) == before


def save_npz_members(**changed: np.ndarray | bytes) -> dict[str, bytes]:
    """The members save_npz writes for MATRIX, some replaced (arrays, or raw bytes)."""
    members: dict[str, np.ndarray | bytes] = {
        "format": np.array(b"csr"),
        "shape": np.array(MATRIX.shape),
        "data": MATRIX.data,
        "indices": MATRIX.indices,
        "indptr": MATRIX.indptr,
        **changed,
    }
    return {
        f"{name}.npy": value if isinstance(value, bytes) else npy_bytes(value)
        for name, value in members.items()
    }


def lying_indices() -> np.ndarray:
    indices = MATRIX.indices.copy()
    indices[5] = 300
    return indices


def falling_indptr() -> np.ndarray:
    indptr = MATRIX.indptr.copy()
    indptr[3] = indptr[4] + 1
    return indptr


BAD_SAVE_NPZ = [
    ({"indices": lying_indices()}, 422, "'indices'[5] is 300", "outside the declared 300 columns"),
    ({"shape": np.array([40, 200])}, 422, "outside the declared 200 columns", "'indices'"),
    ({"shape": np.array([41, 300])}, 422, "'indptr'", "needs 42 integers"),
    ({"indptr": MATRIX.indptr[:-1]}, 422, "'indptr'", "needs 41 integers"),
    ({"indptr": falling_indptr()}, 422, "'indptr' decreases at 4", "never decrease"),
    ({"indptr": MATRIX.indptr + 1}, 422, "'indptr' runs from 1", f"{MATRIX.nnz:,}"),
    ({"data": MATRIX.data[:-1]}, 422, "'indices'", f"{MATRIX.nnz - 1:,} values needs"),
    ({"format": np.array(b"coo")}, 422, "'coo' matrix", "CSR and CSC"),
    ({"shape": np.array([40, 5000])}, 413, "5,000 features", "CLUSTERBENCH_MAX_SPARSE_FEATURES"),
    ({"data": npy_header((10**12,))}, 422, "'data' in the save_npz file", "its header"),
]


@pytest.mark.parametrize(("changed", "status", "where", "what"), BAD_SAVE_NPZ)
async def test_save_npz_whose_shape_lies_is_refused(
    sparse_client: tuple[httpx.AsyncClient, Path],
    changed: dict[str, np.ndarray | bytes],
    status: int,
    where: str,
    what: str,
) -> None:
    # Check that a save_npz file whose declared shape disagrees with its arrays (an index
    # past the columns, an indptr of the wrong length, decreasing, or not ending at nnz,
    # indices and data of different lengths), an unknown layout or too many features is
    # refused naming the member and what is wrong, and that nothing is stored.
    client, _ = sparse_client
    before = await listed(client)
    response, _ = await post(client, SPARSE, zip_bytes(save_npz_members(**changed)))
    assert_problem(response, status, where, what)
    assert await listed(client) == before


async def test_save_npz_bomb_is_refused_before_inflating(
    sparse_client: tuple[httpx.AsyncClient, Path],
) -> None:
    # Check that a save_npz whose 'data' member is 8 MB of zeros deflated to a few kB
    # (one million stored values, past the 10,000 allowed) is refused from the headers:
    # its CRC is wrong, so inflating it would end in a read error, not in the 413 naming
    # the bound; and that nothing is stored.
    client, _ = sparse_client
    n = 1_000_000
    members = save_npz_members(
        shape=np.array([2, 10]),
        data=np.zeros(n),
        indices=np.zeros(n, dtype=np.int32),
        indptr=np.array([0, n // 2, n], dtype=np.int32),
    )
    content = patch_directory(zip_bytes(members), "data.npy", crc=0)
    assert len(content) < 50_000
    before = await listed(client)
    response, _ = await post(client, SPARSE, content)
    assert_problem(
        response, 413, "the sparse data stores 1,000,000 values; the limit is 10,000 (CLUSTER"
    )
    assert await listed(client) == before


async def test_sparse_stored_bytes_are_counted_in_stored_values() -> None:
    # Check that sparse data is bounded by what it stores, nnz x (value + index) bytes
    # plus a row pointer per row, not by rows x columns: 100,000 x 50,000 at 0.1 % (5
    # million values, 60 MB) is within 1 GB; one byte less than it takes is 413.
    bounds = Bounds(max_cells=10**8, max_dataset_bytes=10**9, max_sparse_features=10**6)
    check_sparse_size((100_000, 50_000), 5_000_000, 8, 4, 0, bounds)
    stored = 5_000_000 * 12 + 100_001 * 4
    tight = dataclasses.replace(bounds, max_dataset_bytes=stored - 1)
    with pytest.raises(PayloadTooLargeError, match="CLUSTERBENCH_MAX_DATASET_BYTES"):
        check_sparse_size((100_000, 50_000), 5_000_000, 8, 4, 0, tight)


async def test_save_npz_of_another_layout_is_422(
    sparse_client: tuple[httpx.AsyncClient, Path],
) -> None:
    # Check that a COO matrix's save_npz (row and col, no indptr) is a 422 naming the
    # members it holds and the layouts read, and that nothing is stored.
    client, _ = sparse_client
    before = await listed(client)
    response, _ = await post(client, SPARSE, save_npz_bytes(MATRIX.tocoo()))
    assert_problem(response, 422, "CSR or CSC", "'col', 'data', 'format', 'row', 'shape'")
    assert await listed(client) == before
