"""GET /v1/benchmarks, DELETE /v1/benchmarks/{id} and GET /v1/benchmarks/{id}/report."""

from __future__ import annotations

import base64
import contextlib
import html
import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.datasets import make_blobs

from service.report import render_report, result_cells
from service.schemas import BenchmarkResult, StrategyResult
from service.store import ResultStore
from tests.helpers import png_size

pytestmark = pytest.mark.anyio


async def blobs_benchmark(client: httpx.AsyncClient, seed: int, **extra: Any) -> dict[str, Any]:
    """A small inline benchmark of its own (the seed makes its id new)."""
    X, y = make_blobs(n_samples=40, centers=2, n_features=2, random_state=seed)
    request = {"X": X.tolist(), "y": y.tolist(), "strategies": ["random"], **extra}
    response = await client.post("/v1/benchmarks", json=request)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_list_newest_first_with_cursor(client: httpx.AsyncClient) -> None:
    # Check order, the summary's fields, and that the cursor leads to the next page.
    made = [await blobs_benchmark(client, seed) for seed in (1001, 1002, 1003)]
    first = await client.get("/v1/benchmarks", params={"limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert [b["id"] for b in page["benchmarks"]] == [made[2]["id"], made[1]["id"]]
    item = page["benchmarks"][0]
    assert item == {
        "id": made[2]["id"],
        "dataset": {"id": made[2]["dataset"]["id"], "name": None},
        "n_clusters": 2,
        "strategies": ["random"],
        "created_at": item["created_at"],
        "plot_url": made[2]["plot_url"],
        "url": f"/v1/benchmarks/{made[2]['id']}",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", item["created_at"])
    assert page["next_cursor"]
    second = await client.get("/v1/benchmarks", params={"limit": 2, "cursor": page["next_cursor"]})
    assert second.status_code == 200
    assert second.json()["benchmarks"][0]["id"] == made[0]["id"]
    default = (await client.get("/v1/benchmarks")).json()
    assert 3 <= len(default["benchmarks"]) <= 20


async def test_asking_again_keeps_the_place(client: httpx.AsyncClient) -> None:
    # Check that a cache hit does not move a benchmark to the top: the order is creation.
    old = await blobs_benchmark(client, 1011)
    new = await blobs_benchmark(client, 1012)
    await blobs_benchmark(client, 1011)
    ids = [b["id"] for b in (await client.get("/v1/benchmarks")).json()["benchmarks"]]
    assert ids.index(new["id"]) < ids.index(old["id"])


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 101}, {"limit": "x"}, {"cursor": "nonsense"}, {"cursor": "am9iczox"}],
)
async def test_bad_limit_or_cursor_is_422(client: httpx.AsyncClient, params: Any) -> None:
    # Check the bounds of limit and that a cursor not made here (a jobs one too) is a 422.
    response = await client.get("/v1/benchmarks", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["loc"][:2] == ["query", next(iter(params))]


async def test_delete_removes_benchmark_plot_and_models(client: httpx.AsyncClient) -> None:
    # Check 204, then 404 for the benchmark, its plot, its models, the list and a 2nd delete.
    body = await blobs_benchmark(client, 1021)
    url = f"/v1/benchmarks/{body['id']}"
    model_url = f"/v1/models/{body['results'][0]['model_id']}"
    assert (await client.get(str(body["plot_url"]))).status_code == 200
    assert (await client.get(model_url)).status_code == 200
    response = await client.delete(url)
    assert response.status_code == 204
    assert response.content == b""
    for gone in (url, str(body["plot_url"]), model_url, f"{url}/report"):
        assert (await client.get(gone)).status_code == 404, gone
    listed = (await client.get("/v1/benchmarks", params={"limit": 100})).json()["benchmarks"]
    assert body["id"] not in {b["id"] for b in listed}
    again = await client.delete(url)
    assert again.status_code == 404
    assert again.json()["title"] == "Benchmark not found"


async def test_delete_keeps_a_model_another_benchmark_uses(client: httpx.AsyncClient) -> None:
    # Check that benchmarks sharing an equal model each keep it until the last one goes.
    one = await blobs_benchmark(client, 1031)
    two = await blobs_benchmark(client, 1031, strategies=["random", "k-means++"])
    model_url = f"/v1/models/{one['results'][0]['model_id']}"
    assert two["results"][0]["model_id"] == one["results"][0]["model_id"]
    assert (await client.delete(f"/v1/benchmarks/{one['id']}")).status_code == 204
    assert (await client.get(model_url)).status_code == 200
    assert (await client.delete(f"/v1/benchmarks/{two['id']}")).status_code == 204
    assert (await client.get(model_url)).status_code == 404


async def test_report_is_self_contained(client: httpx.AsyncClient) -> None:
    # Check the table equals the JSON results, the plot is the plot.png inline, the CSP,
    # and that no external URL appears.
    response = await client.post("/v1/benchmarks", json={"dataset": "iris"})
    body = response.json()
    report = await client.get(f"/v1/benchmarks/{body['id']}/report")
    assert report.status_code == 200
    assert report.headers["content-type"] == "text/html; charset=utf-8"
    assert report.headers["content-security-policy"] == (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    )
    page = report.text
    for result in body["results"]:
        row = "".join(
            f"<td>{html.escape(cell)}</td>"
            for cell in result_cells(StrategyResult.model_validate(result))
        )
        assert row in page
        assert f"{result['inertia']:.0f}" in page
    found = re.search(r'<img[^>]* src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert found is not None
    png = base64.b64decode(found.group(1))
    assert png == (await client.get(str(body["plot_url"]))).content
    assert png_size(png)[0] > 0
    assert "http://" not in page
    assert "https://" not in page
    assert body["versions"]["scikit-learn"] in page


async def test_report_escapes_client_strings(client: httpx.AsyncClient) -> None:
    # Check that strings in the body (a name, a warning) arrive as text, never as markup.
    body = (await client.post("/v1/benchmarks", json={"dataset": "iris"})).json()
    body["dataset"]["name"] = "<script>alert(1)</script>"
    body["results"][0]["warnings"] = ['<img src="https://example.com/x.png">']
    page = render_report(BenchmarkResult.model_validate(body), None)
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page


async def test_report_of_one_feature_data_has_no_plot(client: httpx.AsyncClient) -> None:
    # Check that data with one feature (no plot possible) still gets its page.
    X = [[float(i % 9)] for i in range(30)]
    response = await client.post(
        "/v1/benchmarks", json={"X": X, "n_clusters": 2, "strategies": ["random"]}
    )
    assert response.status_code == 200, response.text
    # No plot_url that would answer 422: null, and the schema says why.
    assert response.json()["plot_url"] is None
    report = await client.get(f"/v1/benchmarks/{response.json()['id']}/report")
    assert report.status_code == 200
    assert "<img" not in report.text
    assert "one feature" in report.text


async def test_report_names_the_upload_and_its_columns(client: httpx.AsyncClient) -> None:
    # Check that the report of a benchmark on an uploaded CSV is titled by the file's
    # name (not a hash) and lists the stored column names and format.
    X, _ = make_blobs(n_samples=40, centers=2, n_features=3, random_state=11)
    csv = "girth,height,weight\n" + "".join(f"{a},{b},{c}\n" for a, b, c in X)
    upload = await client.post(
        "/v1/datasets", files={"file": ("trees.csv", csv.encode(), "text/csv")}
    )
    assert upload.status_code == 201, upload.text
    made = await client.post(
        "/v1/benchmarks",
        json={"dataset": upload.json()["id"], "n_clusters": 2, "strategies": ["random"]},
    )
    assert made.status_code == 200, made.text
    page = (await client.get(f"/v1/benchmarks/{made.json()['id']}/report")).text
    assert "<h1>K-Means benchmark on trees.csv</h1>" in page
    assert "<tr><th>columns</th><td>girth; height; weight</td></tr>" in page
    assert "<tr><th>format</th><td>csv</td></tr>" in page


async def test_a_database_from_before_listing_is_migrated(tmp_path: Path) -> None:
    # Check that a cache without the `created` column gains it, its rows dated by last use.
    path = tmp_path / "cache.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TABLE benchmarks (id TEXT PRIMARY KEY, body BLOB NOT NULL, "
            "sha TEXT NOT NULL, size INTEGER NOT NULL, accessed REAL NOT NULL)"
        )
        db.execute("INSERT INTO benchmarks VALUES (?, x'7b7d', '', 2, 1700000000.5)", ("a" * 64,))
        db.commit()
    store = ResultStore(path, max_bytes=1 << 20, memory_bytes=1 << 20)
    try:
        assert store.page(limit=5) == [("a" * 64, 1700000000.5)]
        assert store.page(limit=5, before=(1700000000.5, "a" * 64)) == []
    finally:
        store.close()
