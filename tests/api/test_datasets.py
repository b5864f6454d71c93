"""Uploads: every format to one id, results equal scikit-learn, every bad input a clear 4xx."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import make_blobs

from service.datasets.identity import content_hash
from service.formats import import_upload
from tests.reference import assert_matches, seed_scores
from tests.uploads import npy_bytes, npy_bytes_at

pytestmark = pytest.mark.anyio

X, Y = make_blobs(n_samples=150, centers=3, n_features=4, random_state=8)
X = np.round(X, 6)  # exact through CSV's text
LABELS = np.array(["setosa", "versicolor", "virginica"])[Y]


def csv_bytes(X: np.ndarray, y: np.ndarray | None) -> bytes:
    header = ",".join([f"f{j}" for j in range(X.shape[1])] + (["label"] if y is not None else []))
    rows = [
        ",".join([repr(float(v)) for v in row] + ([str(label)] if y is not None else []))
        for row, label in zip(X, y if y is not None else [None] * len(X), strict=True)
    ]
    return ("\n".join([header, *rows]) + "\n").encode()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def parquet_bytes(X: np.ndarray, y: np.ndarray | None) -> bytes:
    columns: dict[str, Any] = {f"f{j}": X[:, j] for j in range(X.shape[1])}
    if y is not None:
        columns["label"] = y.tolist()
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


UPLOADS = {
    "csv": ("text/csv", csv_bytes(X, LABELS), "label"),
    "npz": ("application/x-npz", npz_bytes(X=X, y=LABELS), None),
    "parquet": ("application/vnd.apache.parquet", parquet_bytes(X, LABELS), "label"),
    "json": ("application/json", orjson.dumps({"X": X.tolist(), "y": LABELS.tolist()}), None),
}
FILENAMES = {"csv": "data.csv", "npz": "data.npz", "parquet": "data.parquet", "json": "data.json"}


async def upload_raw(
    client: httpx.AsyncClient, media_type: str, content: bytes, **params: str
) -> httpx.Response:
    return await client.post(
        "/v1/datasets", content=content, headers={"content-type": media_type}, params=params
    )


async def test_every_format_gives_one_id_and_sklearns_numbers(client: httpx.AsyncClient) -> None:
    # Check that the same data as CSV, NPZ, Parquet and JSON, raw or multipart, is one
    # dataset, that a benchmark on it equals scikit-learn's, and that the same data sent
    # inline is the same benchmark.
    ids = set()
    for fmt, (media_type, content, label_column) in UPLOADS.items():
        params = {"label_column": label_column} if label_column else {}
        raw = await upload_raw(client, media_type, content, **params)
        assert raw.status_code in (200, 201), (fmt, raw.text)
        assert raw.headers["location"] == f"/v1/datasets/{raw.json()['id']}"
        multipart = await client.post(
            "/v1/datasets", files={"file": (FILENAMES[fmt], content)}, params=params
        )
        assert multipart.status_code == 200, (fmt, multipart.text)
        ids.update({raw.json()["id"], multipart.json()["id"]})
        assert raw.json()["n_samples"] == 150
        assert raw.json()["n_features"] == 4
        assert raw.json()["has_labels"] is True
    assert len(ids) == 1
    dataset_id = ids.pop()

    by_id = await client.post("/v1/benchmarks", json={"dataset": dataset_id})
    assert by_id.status_code == 200
    for result in by_id.json()["results"]:
        assert_matches(result, seed_scores(X, LABELS, result["init"], n_clusters=3))
    inline = await client.post("/v1/benchmarks", json={"X": X.tolist(), "y": LABELS.tolist()})
    assert inline.json()["id"] == by_id.json()["id"]
    assert inline.headers["x-cache"] == "hit"


async def test_npy_without_labels_and_float32(client: httpx.AsyncClient) -> None:
    # Check .npy uploads: float64 as given, float32 kept float32 (another dataset), and
    # integer arrays read as float64.
    first = await upload_raw(client, "application/x-npy", npy_bytes(X))
    assert first.status_code in (200, 201)
    assert first.json()["has_labels"] is False
    assert first.json()["dtype"] == "float64"
    as_ints = await upload_raw(client, "application/x-npy", npy_bytes(np.arange(40).reshape(10, 4)))
    assert as_ints.json()["dtype"] == "float64"
    single = await upload_raw(client, "application/x-npy", npy_bytes(X.astype(np.float32)))
    assert single.json()["dtype"] == "float32"
    assert single.json()["id"] != first.json()["id"]
    response = await client.post(
        "/v1/benchmarks", json={"dataset": single.json()["id"], "n_clusters": 3}
    )
    assert response.status_code == 200
    X32 = X.astype(np.float32)
    for result in response.json()["results"]:
        expected = seed_scores(X32, None, result["init"], n_clusters=3)
        np.testing.assert_allclose(result["inertia"], expected["inertia"], rtol=1e-5)
        assert result["n_iter"] == expected["n_iter"]


async def test_inline_data_is_not_listed_as_an_upload(client: httpx.AsyncClient) -> None:
    # Check that data sent inline in a benchmark is not listed among the uploads (each
    # inline request showed up as one), while its id still answers; uploaded afterwards,
    # it is listed.
    inline = (X[:30] + 4321.0).tolist()
    made = await client.post("/v1/benchmarks", json={"X": inline, "n_clusters": 2})
    assert made.status_code == 200, made.text
    dataset_id = made.json()["dataset"]["id"]
    listed = {d["id"] for d in (await client.get("/v1/datasets")).json()["datasets"]}
    assert dataset_id not in listed
    assert (await client.get(f"/v1/datasets/{dataset_id}")).status_code == 200
    uploaded = await client.post("/v1/datasets", json={"X": inline})
    assert uploaded.json()["id"] == dataset_id
    listed = {d["id"] for d in (await client.get("/v1/datasets")).json()["datasets"]}
    assert dataset_id in listed


async def test_list_get_delete(client: httpx.AsyncClient) -> None:
    # Check the listing (built-ins with shapes, then uploads), one dataset, and deletion.
    uploaded = await upload_raw(client, "text/csv", csv_bytes(X[:20] + 100, None), label_column="")
    assert uploaded.status_code == 422  # an empty label_column names no column
    uploaded = await upload_raw(client, "text/csv", csv_bytes(X[:20] + 100, None))
    assert uploaded.status_code == 201
    dataset_id = uploaded.json()["id"]
    listing = (await client.get("/v1/datasets")).json()["datasets"]
    assert [d["name"] for d in listing[:4]] == ["digits", "iris", "wine", "breast_cancer"]
    assert (listing[0]["n_samples"], listing[0]["n_features"]) == (1797, 64)
    assert dataset_id in {d["id"] for d in listing}

    one = await client.get(f"/v1/datasets/{dataset_id}")
    assert one.json() == uploaded.json()
    assert (await client.delete(f"/v1/datasets/{dataset_id}")).status_code == 204
    assert (await client.get(f"/v1/datasets/{dataset_id}")).status_code == 404
    assert (await client.delete(f"/v1/datasets/{dataset_id}")).status_code == 404
    gone = await client.post("/v1/benchmarks", json={"dataset": dataset_id, "n_clusters": 2})
    assert gone.status_code == 422
    assert "unknown dataset" in gone.json()["detail"]

    builtin = await client.delete(f"/v1/datasets/{listing[0]['id']}")
    assert builtin.status_code == 409
    assert (await client.get("/v1/datasets/not-an-id")).status_code == 422


class Exploit:
    """Unpickling this would create a file: proof that nothing is ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def bad_uploads(tmp: Path) -> list[tuple[str, str, bytes, dict[str, str], int, str]]:
    object_array = np.empty(2, dtype=object)
    object_array[:] = [Exploit(tmp / "unpickled"), 1]
    pickled_npy = io.BytesIO()
    np.save(pickled_npy, object_array, allow_pickle=True)
    pickled_npz = io.BytesIO()
    np.savez(pickled_npz, X=object_array)
    good_npy = npy_bytes(X)
    return [
        # Missing cells (empty, NaN), booleans and words are kept since API.md Part 3
        # (tests/api/test_tables.py); a column mixing numbers and words is still refused.
        ("non-numeric", "text/csv", b"a,b\n1,2\n3,oops\n", {}, 422, "'oops' at row 1 (line 3)"),
        ("infinity", "text/csv", b"a,b\n1,inf\n3,4\n", {}, 422, "has infinity at row 0"),
        ("ragged", "text/csv", b"a,b\n1,2\n3,4\n5\n", {}, 422, "row 2 (line 4) has 1 fields"),
        ("no rows", "text/csv", b"a,b\n", {}, 422, "no data rows"),
        ("empty file", "text/csv", b"", {}, 422, "no data rows"),
        ("one row", "text/csv", b"a,b\n1,2\n", {}, 422, "at least 2 samples"),
        (
            "missing label column",
            "text/csv",
            b"a,b\n1,2\n3,4\n",
            {"label_column": "y"},
            422,
            "no column named 'y'",
        ),
        (
            "missing label",
            "text/csv",
            b"a,y\n1,\n3,b\n",
            {"label_column": "y"},
            422,
            "missing label at row 0",
        ),
        ("corrupt npy", "application/x-npy", good_npy[:100], {}, 422, ".npy"),
        ("not npy", "application/x-npy", b"hello world", {}, 422, ".npy"),
        (
            "object npy",
            "application/x-npy",
            pickled_npy.getvalue(),
            {},
            422,
            "nothing is ever unpickled",
        ),
        (
            "object npz",
            "application/x-npz",
            pickled_npz.getvalue(),
            {},
            422,
            "nothing is ever unpickled",
        ),
        ("1-D npy", "application/x-npy", npy_bytes(np.arange(5.0)), {}, 422, "2-dimensional"),
        (
            "complex npy",
            "application/x-npy",
            npy_bytes(np.ones((3, 2), complex)),
            {},
            422,
            "complex",
        ),
        (
            "label_column on npy",
            "application/x-npy",
            good_npy,
            {"label_column": "y"},
            422,
            "label_column applies",
        ),
        ("npz without X", "application/x-npz", npz_bytes(data=X), {}, 422, "named 'X'"),
        (
            "npz y length",
            "application/x-npz",
            npz_bytes(X=X, y=Y[:5]),
            {},
            422,
            "y has 5 labels but X has 150",
        ),
        ("corrupt npz", "application/x-npz", b"PK\x03\x04broken", {}, 422, ".npz"),
        (
            "corrupt parquet",
            "application/vnd.apache.parquet",
            b"PAR1garbagePAR1",
            {},
            422,
            "Parquet",
        ),
        ("bad JSON", "application/json", b'{"X": [[1, 2]', {}, 422, "not valid JSON"),
        ("JSON without X", "application/json", b'{"data": [[1, 2]]}', {}, 422, '{"X"'),
        (
            "JSON mixed labels",
            "application/json",
            b'{"X": [[1], [2]], "y": [1, "a"]}',
            {},
            422,
            "all integers or all strings",
        ),
        ("unsupported type", "application/xml", b"<X/>", {}, 415, "not supported"),
        ("no type", "", b"1,2\n", {}, 415, "undeclared"),
    ]


async def test_bad_uploads_are_clear_problems(client: httpx.AsyncClient, tmp_path: Path) -> None:
    # Check each malformed upload: status, problem+json, what and where; and that no
    # pickled object was ever loaded.
    for name, media_type, content, params, status, words in bad_uploads(tmp_path):
        headers = {"content-type": media_type} if media_type else {}
        response = await client.post(
            "/v1/datasets", content=content, headers=headers, params=params
        )
        assert response.status_code == status, (name, response.text)
        assert response.headers["content-type"] == "application/problem+json", name
        assert words in response.json()["detail"], (name, response.json()["detail"])
    assert not (tmp_path / "unpickled").exists()


async def test_multipart_problems(client: httpx.AsyncClient) -> None:
    # Check a form without the file field, and a file of unknown format.
    no_file = await client.post(
        "/v1/datasets", data={"other": "x"}, files={"f": ("a.csv", b"a\n1\n")}
    )
    assert no_file.status_code == 422
    assert "'file'" in no_file.json()["detail"]
    unknown = await client.post("/v1/datasets", files={"file": ("data.xlsx", b"PK..")})
    assert unknown.status_code == 415
    assert "data.xlsx" in unknown.json()["detail"]


async def test_cell_bound(tmp_path: Path) -> None:
    # Check that a dataset over CLUSTERBENCH_MAX_CELLS is refused with 413 naming the bound,
    # uploaded or inline.
    from tests.conftest import make_settings, serve

    async with serve(make_settings(tmp_path, max_cells=100, workers=1)) as client:
        big = await upload_raw(client, "application/x-npy", npy_bytes(np.zeros((30, 4))))
        assert big.status_code == 413
        assert "30 x 4 = 120 values; the limit is 100" in big.json()["detail"]
        inline = await client.post(
            "/v1/benchmarks", json={"X": np.ones((30, 4)).tolist(), "n_clusters": 2}
        )
        assert inline.status_code == 413
        small = await upload_raw(
            client, "application/x-npy", npy_bytes(np.arange(40.0).reshape(20, 2))
        )
        assert small.status_code == 201


async def test_deleted_dataset_is_unknown_even_when_asked_before(
    client: httpx.AsyncClient,
) -> None:
    # Check that a request answered from the cache before its dataset was deleted is
    # answered as unknown after, the same bytes as before.
    uploaded = await upload_raw(client, "application/x-npy", npy_bytes(X[:30] * 3))
    dataset_id = uploaded.json()["id"]
    body = orjson.dumps({"dataset": dataset_id, "n_clusters": 2, "strategies": ["random"]})
    headers = {"content-type": "application/json"}
    for expected in ("miss", "hit"):
        answer = await client.post("/v1/benchmarks", content=body, headers=headers)
        assert answer.headers["x-cache"] == expected
    assert (await client.delete(f"/v1/datasets/{dataset_id}")).status_code == 204
    after = await client.post("/v1/benchmarks", content=body, headers=headers)
    assert after.status_code == 422
    assert "unknown dataset" in after.json()["detail"]


async def test_inline_data_is_kept_within_its_bound(tmp_path: Path) -> None:
    # Check that data sent inline is pruned least recently used first past
    # CLUSTERBENCH_INLINE_MAX_BYTES, while uploads (even of inline-sent data) stay.
    from tests.conftest import make_settings, serve

    async with serve(make_settings(tmp_path, inline_max_bytes=40_000, workers=1)) as client:
        ids = []
        for i in range(6):
            data = (X[:100] + 10 * i).tolist()  # 100 x 4 float64: 3.2 kB, 5 kB on disk
            answer = await client.post(
                "/v1/benchmarks", json={"X": data, "n_clusters": 3, "strategies": ["random"]}
            )
            assert answer.status_code == 200
            ids.append(answer.json()["dataset"]["id"])
        uploaded = await upload_raw(
            client, "application/json", orjson.dumps({"X": (X[:100]).tolist()})
        )
        assert uploaded.json()["id"] == ids[0]
        for i in range(6, 14):
            data = (X[:100] + 10 * i).tolist()
            await client.post(
                "/v1/benchmarks", json={"X": data, "n_clusters": 3, "strategies": ["random"]}
            )
        stored = {p.name for p in (tmp_path / "datasets").iterdir()}
        assert ids[0] in stored  # uploaded: kept
        assert ids[1] not in stored  # inline, least recently used: pruned
        inline_bytes = sum(
            f.stat().st_size
            for folder in (tmp_path / "datasets").iterdir()
            if folder.name != ids[0]
            for f in folder.iterdir()
        )
        assert inline_bytes <= 40_000
        gone = await client.post("/v1/benchmarks", json={"dataset": ids[1], "n_clusters": 3})
        assert gone.status_code == 422


@pytest.mark.parametrize(
    ("array", "offset", "linked"),
    [
        (X, 128, True),
        (X.astype(np.float32), 128, True),
        (X.astype(">f8"), 128, False),  # big-endian: stored converted to the machine's order
        (np.asfortranarray(X), 128, False),  # column order: stored in row order
        (np.arange(40).reshape(10, 4), 128, False),  # integers: stored as float64
        (X, 131, False),  # values not 64-byte aligned: written where np.save puts them
    ],
    ids=["float64", "float32", "big-endian", "fortran", "int64", "unaligned"],
)
def test_an_npy_holding_x_as_stored_is_linked_not_copied(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    array: np.ndarray,
    offset: int,
    linked: bool,
) -> None:
    # Check that an .npy upload whose values the store keeps as they are is stored as a
    # hard link to the uploaded file (its bytes are not written a second time), that one
    # the reader converts is stored converted, and that either loads back as the values
    # sent, under the id of those values, private to the service's user, after the
    # uploaded file is gone. Where links fail (another file system), the values are
    # written as before.
    path = tmp_path / "upload"
    path.write_bytes(npy_bytes_at(array, offset))
    expected = np.ascontiguousarray(array, dtype=np.float32 if array.dtype == np.float32 else float)

    def stored(root: Path) -> Path:
        upload = import_upload(path, "npy", None, None, root, 10**6, datasets_max_bytes=10**9)
        assert upload.created
        assert upload.info.id == content_hash(expected, None)
        return root / upload.info.id / "X.npy"

    kept = stored(tmp_path / "datasets")
    assert (kept.stat().st_ino == path.stat().st_ino) is linked
    with monkeypatch.context() as patched:
        patched.setattr(os, "link", lambda *_: (_ for _ in ()).throw(OSError(errno.EXDEV, "")))
        written = stored(tmp_path / "elsewhere")
    assert written.stat().st_ino != path.stat().st_ino
    path.unlink()
    for file in (kept, written):
        assert file.stat().st_mode & 0o777 == 0o600
        back = np.load(file, allow_pickle=False)
        assert back.dtype == expected.dtype
        assert back.dtype.isnative
        assert back.flags.c_contiguous
        np.testing.assert_array_equal(back, expected)
