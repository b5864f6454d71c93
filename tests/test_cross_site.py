"""An open server (no key) against a web page on another site: what a browser sends
without asking first (a form post, a text/plain body) acts on nothing (real server)."""

from __future__ import annotations

import httpx
import pytest

from service.process import ServiceProcess

pytestmark = pytest.mark.server

EVIL = "http://evil.example"


def _stored(http: httpx.Client) -> set[str]:
    return {d["id"] for d in http.get("/v1/datasets").json()["datasets"] if d.get("format")}


def test_a_cross_site_simple_request_acts_on_nothing(server: ServiceProcess) -> None:
    # Check that an empty text/plain POST is a 415 rather than the default benchmark,
    # that a multipart upload from another site's page is a 403 and stores nothing,
    # and that the same upload from the server's own pages (Swagger UI) is taken.
    with httpx.Client(base_url=server.url, timeout=120) as http:
        plain = http.post("/v1/benchmarks", headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415, plain.text
        assert plain.headers["content-type"] == "application/problem+json"

        before = _stored(http)
        form = {"file": ("x.csv", b"a,b\n1,2\n3,4\n5,7\n", "text/csv")}
        refused = http.post("/v1/datasets", files=form, headers={"Origin": EVIL})
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert "evil.example" in refused.json()["detail"]
        assert "access-control-allow-origin" not in refused.headers
        assert _stored(http) == before
        ran = http.post("/v1/benchmarks", json={"dataset": "iris"}, headers={"Origin": EVIL})
        assert ran.status_code == 403

        own = http.post("/v1/datasets", files=form, headers={"Origin": server.url})
        assert own.status_code in (200, 201), own.text
        assert http.get("/v1/datasets", headers={"Origin": EVIL}).status_code == 200
