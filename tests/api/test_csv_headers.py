"""CSV files as people write them: without a header, or with pandas' index column."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import make_blobs

pytestmark = pytest.mark.anyio

X, _ = make_blobs(n_samples=100, centers=3, n_features=3, random_state=14)
X = np.round(X, 6)  # exact through CSV's text


def rows(X: np.ndarray, *, index: bool = False) -> list[str]:
    return [
        ",".join(([str(i)] if index else []) + [repr(float(v)) for v in row])
        for i, row in enumerate(X)
    ]


def csv(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


async def upload(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    response = await client.post("/v1/datasets", content=body, headers={"content-type": "text/csv"})
    assert response.status_code in (200, 201), response.text
    return response


async def test_csv_without_header_keeps_every_row(client: httpx.AsyncClient) -> None:
    # Check that a CSV of numbers only keeps its 100 rows (the first is not taken as a
    # header), names its columns x0.., says so, and is the same dataset as with a header.
    headerless = (await upload(client, csv(rows(X)))).json()
    assert headerless["n_samples"] == 100
    assert headerless["n_features"] == 3
    assert headerless["feature_names"] is None
    [warning] = headerless["warnings"]
    assert "read as the first row of data, not as a header" in warning
    assert "x0 to x2" in warning
    with_header = (await upload(client, csv(["a,b,c", *rows(X)]))).json()
    assert with_header["id"] == headerless["id"]
    assert with_header["warnings"] == []


async def test_csv_without_header_takes_its_label_column_by_position_name(
    client: httpx.AsyncClient,
) -> None:
    # Check that label_column can name a headerless CSV's column as x<j>.
    lines = [f"{row},{i % 2}" for i, row in enumerate(rows(X))]
    response = await client.post(
        "/v1/datasets",
        params={"label_column": "x3"},
        content=csv(lines),
        headers={"content-type": "text/csv"},
    )
    assert response.status_code in (200, 201), response.text
    assert response.json()["has_labels"] is True
    assert response.json()["n_features"] == 3


async def test_a_header_of_column_numbers_is_a_header(client: httpx.AsyncClient) -> None:
    # Check that "0,1,2", what pandas writes for a DataFrame made from an array, stays a
    # header: 100 rows, no warning.
    info = (await upload(client, csv(["0,1,2", *rows(X + 500)]))).json()
    assert info["n_samples"] == 100
    assert info["feature_names"] == ["0", "1", "2"]
    assert info["warnings"] == []


@pytest.mark.parametrize("index_name", ["", "Unnamed: 0"])
async def test_pandas_index_column_is_dropped(client: httpx.AsyncClient, index_name: str) -> None:
    # Check that an unnamed first column counting 0..n-1 (pandas' to_csv() default) is
    # dropped with a warning, leaving the same dataset as without it.
    plain = (await upload(client, csv(["a,b,c", *rows(X)]))).json()
    indexed = (await upload(client, csv([f"{index_name},a,b,c", *rows(X, index=True)]))).json()
    assert indexed["n_features"] == 3
    assert indexed["id"] == plain["id"]
    [warning] = indexed["warnings"]
    assert f"the first column ({index_name!r}) counts the rows 0 to 99" in warning
    assert "index=False" in warning


async def test_a_named_or_irregular_first_column_is_kept(client: httpx.AsyncClient) -> None:
    # Check that a first column is kept when it is named, or does not count 0..n-1.
    named = (await upload(client, csv(["id,a,b,c", *rows(X, index=True)]))).json()
    assert named["n_features"] == 4
    assert named["warnings"] == []
    shifted = [f"{i + 1}{line[len(str(i)) :]}" for i, line in enumerate(rows(X, index=True))]
    kept = (await upload(client, csv([",a,b,c", *shifted]))).json()
    assert kept["n_features"] == 4
    assert kept["warnings"] == []


async def test_parquet_index_column_is_dropped(client: httpx.AsyncClient) -> None:
    # Check that pandas' __index_level_0__ column in a Parquet file is not a feature.
    buffer = io.BytesIO()
    columns = {"__index_level_0__": np.arange(len(X)), "a": X[:, 0], "b": X[:, 1]}
    pq.write_table(pa.table(columns), buffer)
    response = await client.post(
        "/v1/datasets",
        content=buffer.getvalue(),
        headers={"content-type": "application/vnd.apache.parquet"},
    )
    assert response.status_code in (200, 201), response.text
    assert response.json()["feature_names"] == ["a", "b"]
    assert len(response.json()["warnings"]) == 1


async def test_feature_names_are_kept(client: httpx.AsyncClient) -> None:
    # Check that an upload's column names are stored and shown by GET.
    lines = ["sepal length,sepal width,petal", *rows(X[:10] + 1000)]
    info = (await upload(client, csv(lines))).json()
    assert info["feature_names"] == ["sepal length", "sepal width", "petal"]
    again = await client.get(f"/v1/datasets/{info['id']}")
    assert again.json()["feature_names"] == ["sepal length", "sepal width", "petal"]
