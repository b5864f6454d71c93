"""Keys, hosts, CORS and the OpenAPI security scheme, in-process."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.datasets import DatasetStore
from service.main import create_app
from service.settings import Settings
from service.tenants import BENCHMARK, DATASET, JOB, MODEL, Tenancy, TenantStore, parse_keys
from tests.conftest import make_settings, serve

pytestmark = pytest.mark.anyio

KEYS = "alice:alice-secret-key-0000000001,bob:bob-secret-key-00000000002"


@pytest.fixture(scope="module")
async def keyed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("keyed"),
        workers=1,
        api_keys=KEYS,
        cors_allow_origins="https://app.example",
    )
    async with serve(settings) as client:
        yield client


async def test_v1_needs_a_key_and_ops_routes_stay_open(keyed: httpx.AsyncClient) -> None:
    # Check 401 problem+json with a Bearer challenge without a key or with a wrong one,
    # both header forms with the right one, and the operations routes open.
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic YTpi"}):
        answer = await keyed.get("/v1/datasets", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json()["type"].endswith("unauthorized")
    alice = {"Authorization": "Bearer alice-secret-key-0000000001"}
    ok = await keyed.get("/v1/datasets", headers=alice)
    assert ok.status_code == 200
    assert (
        await keyed.get("/v1/datasets", headers={"X-API-Key": "bob-secret-key-00000000002"})
    ).status_code == 200
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc"):
        assert (await keyed.get(path)).status_code == 200, path


async def test_hosts_not_allowed_are_refused(keyed: httpx.AsyncClient) -> None:
    # Check that a Host outside the allow-list (a rebinding page's name) is a 400 problem,
    # and the loopback names are served.
    answer = await keyed.get("/healthz", headers={"Host": "attacker.example"})
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert "CLUSTERBENCH_ALLOWED_HOSTS" in answer.json()["detail"]
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert (await keyed.get("/healthz", headers={"Host": host})).status_code == 200, host


async def test_cors_only_for_listed_origins(keyed: httpx.AsyncClient) -> None:
    # Check that the listed origin gets CORS headers (Authorization allowed) and another none.
    preflight = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = await keyed.options(
        "/v1/datasets", headers={"Origin": "https://app.example", **preflight}
    )
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    other = await keyed.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    # Check that without CLUSTERBENCH_CORS_ALLOW_ORIGINS no origin gets CORS headers.
    answer = await client.get("/healthz", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in answer.headers


async def test_single_user_mode_is_open_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Check that with no key configured /v1 answers without one, and the start-up log says
    # the service is open.
    with caplog.at_level(logging.INFO, logger="service"):
        async with serve(make_settings(tmp_path, workers=1)) as client:
            answer = await client.get("/v1/datasets")
            assert answer.status_code == 200
            assert "ratelimit-limit" not in answer.headers
    assert any("open to anyone" in r.getMessage() for r in caplog.records)


async def test_rate_limit_headers_and_429(tmp_path: Path) -> None:
    # Check RateLimit-* on every /v1 answer, and 429 with Retry-After past the rate, per key.
    settings = make_settings(tmp_path, workers=1, api_keys=KEYS, rate_limit="3/minute")
    async with serve(settings) as client:
        alice = {"X-API-Key": "alice-secret-key-0000000001"}
        for left in (2, 1, 0):
            answer = await client.get("/v1/datasets", headers=alice)
            assert answer.status_code == 200
            assert answer.headers["ratelimit-limit"] == "3"
            assert answer.headers["ratelimit-remaining"] == str(left)
        refused = await client.get("/v1/datasets", headers=alice)
        assert refused.status_code == 429
        assert refused.json()["type"].endswith("rate-limited")
        assert int(refused.headers["retry-after"]) >= 1
        assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= set(refused.headers)
        bob = await client.get("/v1/datasets", headers={"X-API-Key": "bob-secret-key-00000000002"})
        assert bob.status_code == 200


def test_openapi_offers_both_key_forms_as_optional() -> None:
    # Check the security schemes (Swagger's Authorize button) and that each /v1 operation
    # may also be called without a key (single-user mode's "Try it out").
    spec = create_app().openapi()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"]["in"] == "header"
    assert schemes["apiKey"]["name"] == "X-API-Key"
    for path, item in spec["paths"].items():
        for operation in item.values():
            if path.startswith("/v1"):
                assert {"bearer": []} in operation["security"], path
                assert {} in operation["security"], path
                assert "401" in operation["responses"], path
            else:
                assert "security" not in operation, path


async def test_served_document_asks_for_keys_only_when_keys_exist(
    client: httpx.AsyncClient, keyed: httpx.AsyncClient
) -> None:
    # Check that with no key the served /openapi.json declares no security (Swagger UI
    # showed a padlock on every route of an open service), and with keys it declares
    # both forms on every /v1 operation, as the committed document does.
    open_spec = (await client.get("/openapi.json")).json()
    assert "securitySchemes" not in open_spec["components"]
    for item in open_spec["paths"].values():
        for operation in item.values():
            assert "security" not in operation
    keyed_spec = (await keyed.get("/openapi.json")).json()
    assert set(keyed_spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert {"bearer": []} in keyed_spec["paths"]["/v1/benchmarks"]["post"]["security"]
    assert keyed_spec == create_app().openapi()


def test_keys_are_never_shown_or_stored(tmp_path: Path) -> None:
    # Check that the keys setting is secret in reprs, and the store keeps only digests.
    settings = Settings(api_keys="alice:top-secret-value-0123456789")
    assert "top-secret-value-0123456789" not in repr(settings)
    assert "top-secret-value-0123456789" not in str(settings.model_dump())
    store = TenantStore(tmp_path / "t.sqlite3", parse_keys("alice:top-secret-value-0123456789"))
    key = store.create_key("dora")
    assert store.authenticate(key) == "dora"
    assert store.authenticate("top-secret-value-0123456789") == "alice"
    assert store.authenticate(key + "x") is None
    rows = sqlite3.connect(tmp_path / "t.sqlite3").execute("SELECT * FROM keys").fetchall()
    assert key not in str(rows)
    assert store.revoke_key("dora")
    assert store.authenticate(key) is None
    store.close()


@pytest.mark.parametrize("text", ["alice", "alice:", "al ice:key", ":key"])
def test_malformed_key_settings_name_the_entry_not_the_key(text: str) -> None:
    # Check that a malformed CLUSTERBENCH_API_KEYS is refused without echoing a key.
    with pytest.raises(ValueError, match="not") as caught:
        parse_keys(f"ok:fine-key-0123456789abcdef,{text}")
    assert "fine-key-0123456789abcdef" not in str(caught.value)


def test_rate_limit_setting_is_checked() -> None:
    # Check that a malformed rate limit is refused when the settings are read.
    with pytest.raises(ValueError, match="rate limit"):
        Settings(rate_limit="many per hour")


def test_sweep_expires_unused_data_and_forgets_pruned_data(tmp_path: Path) -> None:
    # Check that the sweep drops datasets unused past the TTL with what was made from them
    # and their bytes once nobody holds them, keeps those used within it, and drops claims
    # on inline data the store pruned, so that they stop counting in the quota.
    datasets = DatasetStore(tmp_path / "datasets")
    store = TenantStore(tmp_path / "tenants.sqlite3")
    tenancy = Tenancy(store, datasets, dataset_ttl_s=10)
    kept, _ = datasets.put(np.eye(3), None, name=None, format="csv")
    gone, _ = datasets.put(np.ones((3, 2)), None, name=None, format="csv")
    pruned, _ = datasets.put(np.zeros((2, 2)), None, name=None, format="json", inline=True)
    for tenant, dataset in (("a", kept), ("b", kept), ("a", gone), ("b", pruned)):
        store.claim(tenant, DATASET, dataset.id, nbytes=100)
    store.claim("a", BENCHMARK, "b1", parent=gone.id, nbytes=10)
    store.claim("a", MODEL, "m1", parent="b1", nbytes=10)
    store.claim("a", BENCHMARK, "b2", parent=kept.id, nbytes=10)
    datasets.delete(pruned.id)  # as prune_inline does
    assert store.used_bytes("b") == 200

    expired = tenancy.sweep(now=time.time() + 11)
    assert sorted(expired) == sorted([("a", kept.id), ("b", kept.id), ("a", gone.id)])
    assert not (tmp_path / "datasets" / gone.id).exists()
    assert not (tmp_path / "datasets" / kept.id).exists()
    assert store.used_bytes("a") == 0
    assert store.used_bytes("b") == 0

    # Used within the TTL: kept.
    kept, _ = datasets.put(np.eye(3), None, name=None, format="csv")
    store.claim("a", DATASET, kept.id, nbytes=100)
    store.claim("b", DATASET, kept.id, nbytes=100)
    assert tenancy.sweep() == []
    assert (tmp_path / "datasets" / kept.id).exists()
    store.close()


def test_claims_on_jobs_past_their_retention_are_forgotten(tmp_path: Path) -> None:
    # Check that when jobs are removed past their retention, every tenant's claim on
    # them goes too, and nothing else.
    store = TenantStore(tmp_path / "tenants.sqlite3")
    for tenant in ("a", "b"):
        store.claim(tenant, JOB, "j1", parent="r1")
        store.claim(tenant, JOB, "j2", parent="r2")
    store.claim("a", BENCHMARK, "j1")
    store.forget(JOB, ["j1", "j3"])
    assert store.held("a", JOB) == ["j2"]
    assert store.held("b", JOB) == ["j2"]
    assert store.held("a", BENCHMARK) == ["j1"]
    store.close()
