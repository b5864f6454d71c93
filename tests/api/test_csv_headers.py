"""CSV files as people write them: without a header, or with pandas' index column."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import make_blobs

from service.datasets import load_builtin

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


@pytest.mark.parametrize(
    ("delimiter", "decimal"), [(";", ","), (";", "."), ("\t", "."), ("|", "."), (",", ".")]
)
async def test_delimiter_and_decimal_comma_are_detected(
    client: httpx.AsyncClient, delimiter: str, decimal: str
) -> None:
    # Check that a CSV separated by ; (with decimal commas or points), tabs or bars is the
    # same dataset as the comma-separated one, with its column names (a ;-separated file
    # with decimal commas was "ragged: ... the header has 1").
    data = X - 1000.0  # numbers no other test sends (names stay with the first sender)
    expected = (await upload(client, csv(["a,b,c", *rows(data)]))).json()
    lines = [delimiter.join(repr(float(v)).replace(".", decimal) for v in row) for row in data]
    sent = (await upload(client, csv([delimiter.join("abc"), *lines]))).json()
    assert sent["id"] == expected["id"]
    assert sent["feature_names"] == ["a", "b", "c"]
    assert (sent["n_samples"], sent["n_features"]) == (100, 3)


async def test_a_string_column_not_named_as_labels_names_the_fix(
    client: httpx.AsyncClient,
) -> None:
    # Check that a column of string labels, not named by label_column, is taken as a
    # categorical feature (API.md Part 3) with a warning that says how to name it as the
    # labels (it was "non-numeric value 'setosa'" with no hint); named, it is the labels.
    body = csv(["sepal length,species", "5.1,setosa", "7.0,versicolor", "6.3,virginica"])
    response = await client.post("/v1/datasets", content=body, headers={"content-type": "text/csv"})
    assert response.status_code in (200, 201), response.text
    assert response.json()["has_labels"] is False
    (warning,) = response.json()["warnings"]
    assert "column 'species' holds no numbers: it is a categorical feature" in warning
    assert "if column 'species' holds the labels, upload with ?label_column=species" in warning
    named = await client.post(
        "/v1/datasets",
        content=body,
        headers={"content-type": "text/csv"},
        params={"label_column": "species"},
    )
    assert named.status_code in (200, 201), named.text
    assert named.json()["has_labels"] is True
    assert named.json()["warnings"] == []


async def test_a_csv_equal_to_a_builtin_keeps_its_format_and_columns(
    client: httpx.AsyncClient,
) -> None:
    # Check that a CSV whose numbers and labels are iris's answers as the CSV it is
    # (format csv, its column names), not as the built-in's stored copy.
    await client.post("/v1/benchmarks", json={"dataset": "iris", "strategies": ["random"]})
    iris_X, iris_y = load_builtin("iris")
    names = ["sepal length", "sepal width", "petal length", "petal width"]
    lines = [
        ",".join([*(repr(float(v)) for v in row), str(int(label))])
        for row, label in zip(iris_X, iris_y, strict=True)
    ]
    response = await client.post(
        "/v1/datasets",
        files={"file": ("my-iris.csv", csv([",".join([*names, "target"]), *lines]), "text/csv")},
        params={"label_column": "target"},
    )
    assert response.status_code in (200, 201), response.text
    builtin = next(
        d for d in (await client.get("/v1/datasets")).json()["datasets"] if d["name"] == "iris"
    )
    sent = response.json()
    assert sent["id"] == builtin["id"]
    assert sent["format"] == "csv"
    assert sent["feature_names"] == names
    assert sent["name"] == "my-iris.csv"
