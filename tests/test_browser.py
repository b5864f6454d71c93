"""The docs pages in a real headless Chromium, against a real server, with no network.

Debian's ``chromium`` is driven by Playwright (``executable_path``, so Playwright never
downloads a browser of its own). Every request a page makes is recorded, and any that
would leave the service's own origin is refused, so a page that needs a CDN fails here
rather than hanging. The one exception is a request the page's own Content-Security-Policy
refused: the browser never sent it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, Route, expect, sync_playwright

from service.process import ServiceProcess

pytestmark = pytest.mark.server

# Keep Chromium's own traffic (updates, sync, safe browsing) off this closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
]
RUN_TIMEOUT_MS = 60_000  # the seed's benchmark, computed if no earlier test cached it


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "Debian's chromium is not installed, and the browser tests need it: "
            "run `apt-get update && apt-get install -y chromium` (.ci/run does this)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@dataclass
class Visit:
    """A page whose requests are recorded, and refused unless they go to ``origin``."""

    page: Page
    origin: str
    requests: list[str] = field(default_factory=list)
    refused_by_csp: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def here(self, url: str) -> bool:
        return url.startswith((self.origin + "/", f"blob:{self.origin}/"))

    def elsewhere(self) -> list[str]:
        """Requests the page sent, or tried to send, to another origin."""
        self.page.wait_for_load_state("networkidle")
        return [
            url for url in self.requests if not self.here(url) and url not in self.refused_by_csp
        ]


@pytest.fixture
def visit(browser: Browser, server: ServiceProcess) -> Iterator[Visit]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    seen = Visit(page, server.url)
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on("pageerror", lambda error: seen.errors.append(str(error)))

    def failed(request: Request) -> None:
        if request.failure == "csp":
            seen.refused_by_csp.append(request.url)

    page.on("requestfailed", failed)

    def only_here(route: Route) -> None:
        if seen.here(route.request.url):
            route.continue_()
        else:
            route.abort("blockedbyclient")

    page.route("**/*", only_here)
    yield seen
    context.close()


def test_swagger_ui_runs_a_benchmark_offline(visit: Visit) -> None:
    # Check that / leads to Swagger UI, which lists the operations, and that "Try it out"
    # then "Execute" on POST /v1/benchmarks shows a 200, all without leaving the service.
    page = visit.page
    page.goto(visit.origin + "/")
    assert page.url == visit.origin + "/docs"
    operation = page.locator("#operations-benchmarks-create_benchmark")
    expect(operation).to_be_visible()
    paths = httpx.get(visit.origin + "/openapi.json").json()["paths"]
    expect(page.locator(".opblock")).to_have_count(sum(len(item) for item in paths.values()))
    operation.locator(".opblock-summary-control").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table tr.response .response-col_status")
    expect(status).to_have_text("200", timeout=RUN_TIMEOUT_MS)
    body = operation.locator(".live-responses-table tr.response .response-col_description")
    expect(body).to_contain_text('"results"')
    assert visit.requests, "no request was recorded"
    assert visit.elsewhere() == []
    assert visit.errors == []


def test_redoc_renders_offline(visit: Visit) -> None:
    # Check that ReDoc shows the API's title and its operations without leaving the service
    # (its sidebar's logo from cdn.redoc.ly is refused by the page's Content-Security-Policy).
    page = visit.page
    page.goto(visit.origin + "/redoc")
    expect(page.locator("h1").first).to_contain_text("clusterbench")
    for summary in ("Run a benchmark, or fetch it from the cache", "Upload a dataset"):
        expect(page.get_by_role("heading", name=summary)).to_be_visible()
    assert visit.requests, "no request was recorded"
    assert visit.elsewhere() == []
    assert visit.errors == []


def test_report_shows_table_and_plot_offline(visit: Visit, tmp_path: Path) -> None:
    # Check that a digits benchmark's report shows the seed's table and a loaded plot, in a
    # real browser, with nothing requested outside the service.
    made = httpx.post(visit.origin + "/v1/benchmarks", json={}, timeout=RUN_TIMEOUT_MS / 1000)
    assert made.status_code == 200, made.text
    body = made.json()
    page = visit.page
    page.goto(f"{visit.origin}/v1/benchmarks/{body['id']}/report")
    table = page.locator("table#results")
    expect(table).to_be_visible()
    for result in body["results"]:
        expect(table).to_contain_text(f"{result['inertia']:.0f}")
        expect(table).to_contain_text(f"{result['homogeneity']:.3f}")
    image = page.locator("img#plot")
    expect(image).to_be_visible()
    page.wait_for_function("document.getElementById('plot').complete")
    assert image.evaluate("img => img.naturalWidth") > 0
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
    assert visit.requests == [page.url]
    assert visit.elsewhere() == []
    assert visit.errors == []


def test_sweep_report_and_plot_offline(visit: Visit, tmp_path: Path) -> None:
    # Check that a sweep's report shows each strategy's recommended k, the table and a
    # loaded plot, fits the window's width, and requests nothing outside the service;
    # and that the plot itself displays. The screenshots stay in tmp_path to be looked at.
    body = {"dataset": "iris", "k": {"min": 2, "max": 8}, "strategies": ["k-means++", "random"]}
    made = httpx.post(visit.origin + "/v1/sweeps", json=body, timeout=RUN_TIMEOUT_MS / 1000)
    assert made.status_code == 200, made.text
    sweep = made.json()
    page = visit.page
    page.set_viewport_size({"width": 1680, "height": 1000})
    page.goto(f"{visit.origin}/v1/sweeps/{sweep['id']}/report")
    expect(page.locator("h1")).to_have_text("Choosing k on the iris dataset")
    recommended = page.locator("table#recommended")
    for init, picks in sweep["recommended_k_by_strategy"].items():
        expect(recommended).to_contain_text(init)
        expect(recommended).to_contain_text(str(picks["silhouette"]))
    expect(page.locator("table#results tbody tr")).to_have_count(len(sweep["results"]))
    image = page.locator("img#plot")
    expect(image).to_be_visible()
    page.wait_for_function("document.getElementById('plot').complete")
    assert image.evaluate("img => img.naturalWidth") > 0
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(tmp_path / "sweep-report.png"), full_page=True)
    assert visit.requests == [page.url]
    assert visit.elsewhere() == []
    assert visit.errors == []
    plot = page.goto(visit.origin + sweep["plot_url"])
    assert plot is not None
    assert plot.headers["content-type"] == "image/png"
    page.screenshot(path=str(tmp_path / "sweep-plot.png"))
    for name in ("sweep-report.png", "sweep-plot.png"):
        assert (tmp_path / name).stat().st_size > 0
