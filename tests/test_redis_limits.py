"""Rate-limit counters in Redis: one count per tenant across replicas, and an outage is 503."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_settings, serve
from tests.scaleout import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.server]


async def test_two_replicas_share_one_rate_limit(tmp_path: Path, redis_server: RedisServer) -> None:
    # Check that requests to two replicas count against one limit (CLUSTERBENCH_RATE_LIMIT
    # with CLUSTERBENCH_REDIS_URL), and that a stopped Redis is a 503 with Retry-After, not
    # a 500, until it is back.
    settings = make_settings(
        tmp_path / "data", workers=1, redis_url=redis_server.url, rate_limit="3/minute"
    )
    async with serve(settings) as a, serve(settings) as b:
        statuses = [(await client.get("/v1/datasets")).status_code for client in (a, b, a, b)]
        assert statuses == [200, 200, 200, 429]
        redis_server.stop()
        try:
            answer = await a.get("/v1/datasets")
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert int(answer.headers["retry-after"]) > 0
        finally:
            redis_server.start()
        assert (await b.get("/v1/datasets")).status_code == 429  # counted still
