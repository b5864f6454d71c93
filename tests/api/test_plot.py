"""GET /v1/benchmarks/{id}/plot.png over HTTP."""

from __future__ import annotations

import httpx
import pytest
from sklearn.datasets import make_blobs

from service.plotting import figure_size_px
from tests.helpers import png_size

pytestmark = pytest.mark.anyio


async def benchmark(client: httpx.AsyncClient, request: dict[str, object]) -> dict[str, object]:
    response = await client.post("/v1/benchmarks", json=request)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


@pytest.mark.parametrize("name", ["digits", "iris", "wine", "breast_cancer"])
async def test_every_builtin_renders(client: httpx.AsyncClient, name: str) -> None:
    # Check that each built-in dataset's benchmark has a plot with one panel per strategy.
    body = await benchmark(client, {"dataset": name})
    response = await client.get(str(body["plot_url"]))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert png_size(response.content) == figure_size_px(3)


async def test_single_panel_cache_and_etag(client: httpx.AsyncClient) -> None:
    # Check ?init=, byte-identical repeats, ETag/304 and Cache-Control.
    body = await benchmark(client, {"dataset": "wine", "strategies": ["random", "pca"]})
    url = str(body["plot_url"])
    first = await client.get(url, params={"init": "pca"})
    assert first.status_code == 200
    assert png_size(first.content) == figure_size_px(1)
    second = await client.get(url, params={"init": "pca"})
    assert second.content == first.content
    both = await client.get(url)
    assert png_size(both.content) == figure_size_px(2)
    assert both.content != first.content
    assert first.headers["etag"] == f'"{body["id"]}"'
    assert "max-age" in first.headers["cache-control"]
    cached = await client.get(url, headers={"if-none-match": first.headers["etag"]})
    assert cached.status_code == 304
    assert cached.content == b""


async def test_inline_two_feature_and_unlabelled_data(client: httpx.AsyncClient) -> None:
    # Check that unlabelled 2-feature inline data renders (pca: n_clusters <= 2 features).
    X, _ = make_blobs(n_samples=80, centers=2, n_features=2, random_state=3)
    body = await benchmark(client, {"X": X.tolist(), "n_clusters": 2})
    response = await client.get(str(body["plot_url"]))
    assert response.status_code == 200
    assert png_size(response.content) == figure_size_px(3)


async def test_plot_errors(client: httpx.AsyncClient) -> None:
    # Check 404 for an unknown benchmark or a strategy it lacks, 422 for a bad init name
    # and for data with one feature.
    missing = await client.get(f"/v1/benchmarks/{'b' * 64}/plot.png")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    body = await benchmark(client, {"dataset": "iris", "strategies": ["random"]})
    lacking = await client.get(str(body["plot_url"]), params={"init": "k-means++"})
    assert lacking.status_code == 404
    assert "has no strategy 'k-means++'" in lacking.json()["detail"]
    bad = await client.get(str(body["plot_url"]), params={"init": "nope"})
    assert bad.status_code == 422
    one_feature = await benchmark(
        client, {"X": [[0.0], [0.1], [5.0], [5.2]], "n_clusters": 2, "strategies": ["random"]}
    )
    assert one_feature["plot_url"] is None  # the plot's URL, asked all the same: 422
    flat = await client.get(f"/v1/benchmarks/{one_feature['id']}/plot.png")
    assert flat.status_code == 422
    assert "at least 2 features" in flat.json()["detail"]
