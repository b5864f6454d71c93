"""Uploads are bounded before they are decoded: crafted files get a clear 4xx, never a 500.

Every malicious file is built here, small: a `.npy` header that claims a huge shape and
holds no values, a zip member whose directory lies about its size, a Parquet list
column of zeros (under 1 kB on disk), string labels stored once in a Parquet dictionary.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.datasets import is_id
from service.errors import PayloadTooLargeError, ServiceError
from service.formats import import_upload, read_dataset
from service.settings import Settings
from tests.conftest import make_settings, serve
from tests.uploads import assert_problem, npy_bytes, npy_header, patch_directory, post, zip_bytes

pytestmark = pytest.mark.anyio

NPZ = "application/x-npz"
NPY = "application/x-npy"
PARQUET = "application/vnd.apache.parquet"
CSV = "text/csv"
# Generous: a refusal from the header alone takes milliseconds; decoding what these
# files claim would take far longer, or the worker.
QUICK_S = 10.0


def parquet_bytes(table: pa.Table, **options: Any) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
async def small_client(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a bound of 10,000 values, so a bomb of 1,000 x 1,000 zeros is past it."""
    settings = make_settings(tmp_path_factory.mktemp("bounds"), max_cells=10_000, workers=1)
    async with serve(settings) as client:
        yield client


X_SMALL = np.arange(20.0).reshape(10, 2)

# -- .npy and .npz: declared shapes are checked from the header, before any value ---------


async def test_npz_header_claiming_a_huge_shape_is_413(client: httpx.AsyncClient) -> None:
    # Check that an .npz whose 'X' header claims (10**12, 10**6) float64 values (and holds
    # none) is refused from its header: 413 naming the member, its shape and the bound.
    content = zip_bytes({"X.npy": npy_header((10**12, 10**6))})
    response, elapsed = await post(client, NPZ, content)
    assert_problem(
        response,
        413,
        "'X' in the .npz declares 1,000,000,000,000 x 1,000,000",
        "CLUSTERBENCH_MAX_CELLS",
    )
    assert elapsed < QUICK_S


async def test_npz_labels_are_checked_before_they_are_read(client: httpx.AsyncClient) -> None:
    # Check that 'y' is checked from its header too: a length that is not n_samples, a
    # huge one, Python objects, more than one dimension.
    X = npy_bytes(X_SMALL)
    cases = [
        (npy_header((10**12,), "<i8"), "y has 1000000000000 labels but X has 10 samples"),
        (npy_header((10**6,), "<i8"), "y has 1000000 labels but X has 10 samples"),
        (npy_header((10,), "|O"), "holds Python objects"),
        (npy_header((10, 2), "<i8"), "y must be 1-dimensional"),
        (npy_header((10,), "<c16"), "labels must be integers or strings"),
    ]
    for y, words in cases:
        response, elapsed = await post(client, NPZ, zip_bytes({"X.npy": X, "y.npy": y}))
        assert_problem(response, 422, "'y'" if "y has" not in words else "y has", words)
        assert elapsed < QUICK_S


async def test_npz_bomb_is_refused_before_inflating(small_client: httpx.AsyncClient) -> None:
    # Check that a member of 8 MB of zeros (8 kB deflated) past CLUSTERBENCH_MAX_CELLS is
    # refused from its header without being inflated: its CRC is wrong, so inflating it
    # would end in a read error, not in the 413 that names the bound.
    bomb = npy_bytes(np.zeros((1000, 1000)))
    content = patch_directory(zip_bytes({"X.npy": bomb}), "X.npy", crc=0)
    assert len(content) < 50_000
    response, _ = await post(small_client, NPZ, content)
    assert_problem(
        response,
        413,
        "'X' in the .npz declares 1,000 x 1,000 = 1,000,000 values; the limit is 10,000",
    )


async def test_npz_member_whose_size_disagrees_with_its_header(
    client: httpx.AsyncClient,
) -> None:
    # Check that a member whose zip directory declares more bytes than its .npy header
    # (what inflating may produce) is refused, and one that declares fewer too (zipfile
    # stops there, so the CRC does not match).
    good = npy_bytes(X_SMALL)
    content = patch_directory(zip_bytes({"X.npy": good}), "X.npy", file_size=10**9)
    response, _ = await post(client, NPZ, content)
    assert_problem(
        response, 422, "'X' in the .npz is 1,000,000,000 bytes long but its header", "declares"
    )
    content = patch_directory(zip_bytes({"X.npy": good}), "X.npy", file_size=len(good) - 8)
    response, _ = await post(client, NPZ, content)
    assert_problem(response, 422, "not a readable .npz file", "'X.npy'")


async def test_npz_member_that_is_not_an_array(client: httpx.AsyncClient) -> None:
    # Check that a member named X holding other bytes is a 422, not a 500.
    response, _ = await post(client, NPZ, zip_bytes({"X": b"hello"}))
    assert_problem(response, 422, "'X' in the .npz is not a readable .npy array")


@pytest.mark.parametrize(
    ("shape", "words"),
    [
        ((10**12, 10**6), "declares 1,000,000,000,000 x 1,000,000"),
        ((10**12, 10**12), "declares 1,000,000,000,000 x 1,000,000,000,000"),
    ],
)
async def test_npy_header_claiming_a_huge_shape_is_413(
    client: httpx.AsyncClient, shape: tuple[int, ...], words: str
) -> None:
    # Check that a plain .npy whose header claims a huge shape is refused from its header,
    # even when the number of values overflows 64 bits.
    response, elapsed = await post(client, NPY, npy_header(shape))
    assert_problem(response, 413, "the .npy file " + words, "CLUSTERBENCH_MAX_CELLS")
    assert elapsed < QUICK_S


async def test_truncated_npy_is_422(client: httpx.AsyncClient) -> None:
    # Check that an .npy holding fewer bytes than its header declares is a 422 saying so.
    content = npy_bytes(X_SMALL)[:-8]
    response, _ = await post(client, NPY, content)
    assert_problem(response, 422, f"the .npy file is {len(content):,} bytes long", "declares")


# -- Parquet: the schema and metadata are checked before any page is decoded --------------


def list_column_parquet(n_values: int) -> bytes:
    """Two rows whose one column holds ``n_values`` zeros: under 1 kB on disk."""
    values = pa.array(np.zeros(n_values, dtype=np.int8))
    offsets = pa.array([0, n_values // 2, n_values], type=pa.int32())
    column = pa.ListArray.from_arrays(offsets, values)
    return parquet_bytes(pa.table({"a": column, "b": pa.array([1.0, 2.0])}))


async def test_parquet_nested_column_is_refused_before_decoding(
    client: httpx.AsyncClient,
) -> None:
    # Check that a Parquet list column (20 million values in a file under 1 kB) is refused
    # from the schema, and so are struct and map columns.
    content = list_column_parquet(20_000_000)
    assert len(content) < 2_000
    response, elapsed = await post(client, PARQUET, content)
    assert_problem(response, 422, "column 'a' (column 0) is nested (list<")
    assert response.json()["errors"][0]["loc"] == ["column", "a"]
    assert elapsed < QUICK_S
    struct_column = pa.array([{"u": 1.0}, {"u": 2.0}])
    map_column = pa.array([[(1, 2.0)], [(3, 4.0)]], type=pa.map_(pa.int8(), pa.float64()))
    for column in (struct_column, map_column):
        table = pa.table({"f": [1.0, 2.0], "nested": column})
        response, _ = await post(client, PARQUET, parquet_bytes(table))
        assert_problem(response, 422, "column 'nested' (column 1) is nested")


async def test_parquet_declared_cells_are_checked_from_metadata(
    small_client: httpx.AsyncClient,
) -> None:
    # Check that rows x feature columns from the metadata is checked against the bound.
    table = pa.table({"a": np.zeros(20_000), "b": np.zeros(20_000)})
    response, _ = await post(small_client, PARQUET, parquet_bytes(table))
    assert_problem(response, 413, "20,000 x 2 = 40,000 values; the limit is 10,000")


async def test_duplicate_column_names_are_422(client: httpx.AsyncClient) -> None:
    # Check that duplicate column names, in Parquet and in CSV, are a 422 naming the column.
    table = pa.Table.from_arrays([pa.array([1.0, 2.0]), pa.array([3.0, 4.0])], names=["x", "x"])
    response, _ = await post(client, PARQUET, parquet_bytes(table))
    assert_problem(response, 422, "two columns named 'x' (columns 0 and 1)")
    response, _ = await post(client, CSV, b"a,b,a\n1,2,3\n4,5,6\n")
    assert_problem(response, 422, "the CSV has two columns named 'a' (columns 0 and 2)")
    assert response.json()["errors"][0]["loc"] == ["column", "a"]


async def test_string_labels_are_bounded_before_they_grow(client: httpx.AsyncClient) -> None:
    # Check that string labels stored once in a small Parquet file (one distinct label of
    # 4,000 characters on 70,000 rows) but 1.1 GB once stored as an array are refused by
    # CLUSTERBENCH_MAX_DATASET_BYTES (default 1 GiB) before they are expanded.
    n = 70_000
    labels = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, dtype=np.int32)), pa.array(["a" * 4000])
    )
    table = pa.table({"f": np.zeros(n), "label": labels})
    # Without the stored Arrow schema the labels read back as plain strings.
    content = parquet_bytes(table, store_schema=False)
    assert len(content) < 50_000
    response, elapsed = await post(client, PARQUET, content, label_column="label")
    assert_problem(
        response,
        413,
        "plus 1.0 GiB (1,120,000,000 bytes) of labels",
        "the limit is 1.0 GiB (1,073,741,824 bytes) (CLUSTERBENCH_MAX_DATASET_BYTES)",
    )
    assert elapsed < QUICK_S


async def test_parquet_string_labels_still_read(client: httpx.AsyncClient) -> None:
    # Check that string labels, plain or dictionary-encoded, over several row groups, are
    # read as the same labels (and so the same dataset).
    names = np.array(["setosa", "versicolor", "virginica"])[np.arange(30) % 3]
    X = np.arange(60.0).reshape(30, 2)
    ids = set()
    for labels in (pa.array(names), pa.array(names).dictionary_encode()):
        table = pa.table({"a": X[:, 0], "b": X[:, 1], "label": labels})
        content = parquet_bytes(table, row_group_size=7)
        response, _ = await post(client, PARQUET, content, label_column="label")
        assert response.status_code in (200, 201), response.text
        ids.add(response.json()["id"])
    as_npz = io.BytesIO()
    np.savez(as_npz, X=X, y=names)
    response, _ = await post(client, NPZ, as_npz.getvalue())
    ids.add(response.json()["id"])
    assert len(ids) == 1


# -- CSV ---------------------------------------------------------------------------------


async def test_csv_long_field_before_a_ragged_row(client: httpx.AsyncClient) -> None:
    # Check that a field over 128 KB before a ragged row does not hide where the row is.
    content = b'a,b\n1,2\n3,"' + b"x" * 200_000 + b'"\n5\n'
    response, _ = await post(client, CSV, content)
    assert_problem(response, 422, "row 2 (line 4) has 1 fields, the header has 2")


async def test_csv_header_not_utf8(client: httpx.AsyncClient) -> None:
    # Check that a header that is not UTF-8 is a 422 naming the column.
    response, _ = await post(client, CSV, b"a,\xff\xfe\n1,2\n3,4\n")
    assert_problem(response, 422, "the name of column 1", "is not valid UTF-8")
    assert response.json()["errors"][0]["loc"] == ["column", 1]


async def test_csv_blank_file_has_no_rows(client: httpx.AsyncClient) -> None:
    # Check that a file of blank lines is "no rows", as an empty one is.
    for content in (b"", b"\n", b"\n\n \n"):
        response, _ = await post(client, CSV, content)
        assert_problem(response, 422, "no data rows")


async def test_csv_first_non_number_past_the_first_slice(client: httpx.AsyncClient) -> None:
    # Check that the first non-numeric cell is named with its row when it comes after
    # 100,000 numeric ones (the column is searched in slices).
    content = b"a,b\n" + b"1,2\n" * 100_000 + b"3,x\n4,y\n"
    response, _ = await post(client, CSV, content)
    assert_problem(response, 422, "non-numeric value 'x' at row 100000 (line 100002)")


# -- The stored size of a dataset, every format --------------------------------------------


def write_uploads(tmp_path: Path) -> dict[str, tuple[Path, str | None]]:
    """One 100 x 4 float64 dataset (3.2 kB stored, plus 800 bytes of labels) per format."""
    X = np.arange(400.0).reshape(100, 4)
    y = np.arange(100) % 3
    csv = "a,b,c,d,label\n" + "".join(
        ",".join(str(v) for v in [*row, label]) + "\n" for row, label in zip(X, y, strict=True)
    )
    npz = io.BytesIO()
    np.savez(npz, X=X, y=y)
    table = pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "d": X[:, 3], "label": y})
    json_doc = '{"X": ' + str(X.tolist()) + ', "y": ' + str(y.tolist()) + "}"
    contents: dict[str, tuple[bytes, str | None]] = {
        "csv": (csv.encode(), "label"),
        "npy": (npy_bytes(X), None),
        "npz": (npz.getvalue(), None),
        "parquet": (parquet_bytes(table), "label"),
        "json": (json_doc.encode(), None),
    }
    paths = {}
    for fmt, (content, label_column) in contents.items():
        path = tmp_path / f"data.{fmt}"
        path.write_bytes(content)
        paths[fmt] = (path, label_column)
    return paths


@pytest.mark.parametrize("fmt", ["csv", "npy", "npz", "parquet", "json"])
def test_stored_bytes_are_bounded_in_every_format(tmp_path: Path, fmt: str) -> None:
    # Check that import_upload refuses a dataset over max_dataset_bytes in every format,
    # saying the bound and its setting, and stores it when it fits.
    path, label_column = write_uploads(tmp_path)[fmt]
    stored = 3200 + (0 if fmt == "npy" else 800)
    root = tmp_path / "datasets"
    with pytest.raises(PayloadTooLargeError) as refused:
        import_upload(path, fmt, label_column, None, root, 10**6, stored - 1)
    assert refused.value.status == 413
    assert f"the limit is {stored - 1:,} bytes (CLUSTERBENCH_MAX_DATASET_BYTES)" in str(
        refused.value
    )
    upload = import_upload(path, fmt, label_column, None, root, 10**6, stored)
    info, created = upload.info, upload.created
    assert created
    assert (info.n_samples, info.n_features) == (100, 4)


def test_a_tables_codes_categories_and_weights_count_as_stored_bytes(tmp_path: Path) -> None:
    # Check that a table's C.npy (int32 codes), w.npy (float64 weights) and categories
    # count towards CLUSTERBENCH_MAX_DATASET_BYTES and CLUSTERBENCH_DATASETS_MAX_BYTES,
    # not its numeric X alone, and that nothing is stored when refused.
    path = tmp_path / "table.csv"
    rows = "".join(f"{i * 0.5},{['north', 'south'][i % 2]},{1 + i % 3}\n" for i in range(100))
    path.write_text("a,region,w\n" + rows)
    stored = 100 * 8 + 100 * 4 + 100 * 8 + len("northsouth")  # X, C, w, categories
    root = tmp_path / "datasets"
    refused_sizes = {"max_dataset_bytes": stored - 1, "datasets_max_bytes": stored - 1}
    for name, size in refused_sizes.items():
        bounds = {"max_dataset_bytes": 10**6, "datasets_max_bytes": 10**6, name: size}
        with pytest.raises(ServiceError) as refused:
            import_upload(
                path,
                "csv",
                None,
                None,
                root,
                10**6,
                bounds["max_dataset_bytes"],
                datasets_max_bytes=bounds["datasets_max_bytes"],
                weight_column="w",
            )
        assert refused.value.status in (413, 507)
        assert f"{stored - 1:,}" in str(refused.value), str(refused.value)
        assert not root.exists() or not [p for p in root.iterdir() if is_id(p.name)]
    upload = import_upload(
        path, "csv", None, None, root, 10**6, stored, datasets_max_bytes=stored, weight_column="w"
    )
    assert upload.created
    folder = root / upload.info.id
    assert sum((folder / f).stat().st_size for f in ("X.npy", "C.npy", "w.npy")) > stored


def test_npz_stored_bytes_are_checked_from_the_headers(tmp_path: Path) -> None:
    # Check that the stored size is known from the headers: X of (10**5, 10**3) float64
    # declared and never sent is refused by its size, as are long string labels.
    path = tmp_path / "claims.npz"
    path.write_bytes(zip_bytes({"X.npy": npy_header((10**5, 10**3))}))
    with pytest.raises(PayloadTooLargeError, match=r"would take 762\.9 MiB"):
        read_dataset(path, "npz", max_cells=10**9, max_dataset_bytes=2**20)
    path.write_bytes(
        zip_bytes({"X.npy": npy_bytes(X_SMALL), "y.npy": npy_header((10,), "<U100000")})
    )
    with pytest.raises(PayloadTooLargeError, match=r"plus 3\.8 MiB \(4,000,000 bytes\) of labels"):
        read_dataset(path, "npz", max_cells=10**9, max_dataset_bytes=2**20)


def test_json_string_labels_are_bounded(tmp_path: Path) -> None:
    # Check that long JSON string labels are counted before they become an array.
    path = tmp_path / "labels.json"
    path.write_text('{"X": [[1], [2], [3]], "y": ["' + "a" * 1000 + '", "b", "c"]}')
    with pytest.raises(PayloadTooLargeError, match=r"plus 12,000 bytes of labels"):
        read_dataset(path, "json", max_cells=100, max_dataset_bytes=10_000)


def test_max_dataset_bytes_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # Check that CLUSTERBENCH_MAX_DATASET_BYTES is read, defaults to 1 GiB and is at least 1.
    assert Settings().max_dataset_bytes == 2**30
    monkeypatch.setenv("CLUSTERBENCH_MAX_DATASET_BYTES", "1234")
    assert Settings().max_dataset_bytes == 1234
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        Settings(max_dataset_bytes=0)


def test_parquet_declared_uncompressed_size_is_bounded(tmp_path: Path) -> None:
    # Check that a Parquet file whose pages declare more than twice the stored bound once
    # decompressed is refused from its metadata (distinct string labels: 1 MB of pages).
    rng = np.random.default_rng(0)
    labels = ["".join(rng.choice(list("abcdef"), 1000)) for _ in range(1000)]
    table = pa.table({"f": np.zeros(1000), "label": labels})
    path = tmp_path / "labels.parquet"
    path.write_bytes(parquet_bytes(table, compression="zstd", use_dictionary=False))
    with pytest.raises(PayloadTooLargeError, match="of uncompressed data, more than twice"):
        read_dataset(
            path, "parquet", label_column="label", max_cells=10**6, max_dataset_bytes=100_000
        )
