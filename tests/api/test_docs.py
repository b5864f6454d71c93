"""The documentation pages, the `/` redirect, HEAD, route labels and the README's plot."""

from __future__ import annotations

import re
import subprocess

import httpx
import pytest

from service.main import create_app
from service.plotting import figure_size_px
from tests.conftest import ROOT
from tests.helpers import png_size

pytestmark = pytest.mark.anyio

# src="...", href="..." and url(...) in a page: everything a browser would fetch or follow.
REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\(\s*["']?([^"')]+)""")


def references(html: str) -> list[str]:
    return [a or b for a, b in REFERENCE.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_nothing_from_elsewhere(client: httpx.AsyncClient, page: str) -> None:
    # Check that a docs page names no other host, and that every file it names is served
    # here with a fitting media type, the favicon included.
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "http://" not in html
    assert "https://" not in html
    found = references(html)
    assert any(url.endswith(".js") for url in found), found
    assert any(url.endswith(".png") for url in found), "no favicon"
    for url in found:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        kind = asset.headers["content-type"]
        if url.endswith(".js"):
            assert "javascript" in kind, (url, kind)
        elif url.endswith(".css"):
            assert kind.startswith("text/css"), (url, kind)
        elif url.endswith(".png"):
            assert kind == "image/png", (url, kind)
            assert asset.content.startswith(b"\x89PNG")
        else:
            assert url == "/openapi.json", url


async def test_swagger_ui_uses_the_served_document(client: httpx.AsyncClient) -> None:
    # Check that Swagger UI and ReDoc read /openapi.json, which still serves the document.
    for page in ("/docs", "/redoc"):
        assert "/openapi.json" in (await client.get(page)).text
    document = (await client.get("/openapi.json")).json()
    assert document["info"]["title"] == "clusterbench"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_root_redirects_to_docs(client: httpx.AsyncClient, method: str) -> None:
    # Check that / sends a browser on to Swagger UI, and is no operation of the API.
    response = await client.request(method, "/")
    assert response.status_code in (307, 308)
    assert response.headers["location"] == "/docs"
    assert "/" not in create_app().openapi()["paths"]


async def test_metrics_label_docs_routes(client: httpx.AsyncClient) -> None:
    # Check that the docs, the document, the redirect and the static files are counted under
    # their route (the static files under their mount, never their own path).
    for path in ("/docs", "/redoc", "/openapi.json", "/", "/static/swagger-ui.css"):
        await client.get(path)
    await client.get("/static/no-such-file.js")
    metrics = (await client.get("/metrics")).text
    lines = [line for line in metrics.splitlines() if line.startswith("clusterbench_http")]
    for route, status in [
        ("/docs", 200),
        ("/redoc", 200),
        ("/openapi.json", 200),
        ("/", 307),
        ("/static", 200),
        ("/static", 404),
    ]:
        label = f'method="GET",route="{route}",status="{status}"'
        assert any(label in line for line in lines), (label, lines)
    assert not any("swagger-ui" in line or "no-such-file" in line for line in lines)


async def seed_benchmark_id(client: httpx.AsyncClient) -> str:
    response = await client.post("/v1/benchmarks", json={})
    assert response.status_code == 200, response.text
    benchmark_id: str = response.json()["id"]
    return benchmark_id


@pytest.mark.parametrize(
    "path",
    [
        "/healthz",
        "/readyz",
        "/v1/datasets",
        "/v1/benchmarks/{id}",
        "/v1/benchmarks/{id}/plot.png",
        "/docs",
        "/redoc",
        "/openapi.json",
        "/static/swagger-ui.css",
    ],
)
async def test_head_answers_where_get_does(client: httpx.AsyncClient, path: str) -> None:
    # Check that HEAD gives the GET's status and headers, and no body.
    if "{id}" in path:
        path = path.format(id=await seed_benchmark_id(client))
    get = await client.get(path)
    head = await client.head(path)
    assert get.status_code == 200
    assert head.status_code == 200
    assert head.content == b""
    for name in ("content-type", "content-length", "etag", "cache-control"):
        assert head.headers.get(name) == get.headers.get(name), name


async def test_head_elsewhere_is_what_get_would_be(client: httpx.AsyncClient) -> None:
    # Check that HEAD on a POST-only route is 405 with Allow, and on no route 404, both
    # without a body; and that HEAD is counted as HEAD under its route.
    post_only = await client.head("/v1/models/abc/predict")
    assert post_only.status_code == 405
    assert "POST" in post_only.headers["allow"]
    assert post_only.content == b""
    missing = await client.head("/no/such/path")
    assert missing.status_code == 404
    assert missing.content == b""
    await client.head("/healthz")
    metrics = (await client.get("/metrics")).text
    assert 'method="HEAD",route="/healthz",status="200"' in metrics


def test_openapi_has_no_head_operations() -> None:
    # Check that serving HEAD adds no operation to the document.
    paths = create_app().openapi()["paths"]
    assert all("head" not in item for item in paths.values())


def test_readme_images_are_committed() -> None:
    # Check that every image the README shows is in the repository, not hidden by
    # .gitignore, and that the plot is the seed's three-panel figure.
    readme = (ROOT / "README.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme)
    assert "docs/plot.png" in images
    for image in images:
        assert (ROOT / image).is_file(), image
        ignored = subprocess.run(
            ["git", "check-ignore", "--no-index", "-q", image], cwd=ROOT, check=False
        )
        assert ignored.returncode == 1, f"{image} is ignored by .gitignore"
    assert png_size((ROOT / "docs" / "plot.png").read_bytes()) == figure_size_px(3)
