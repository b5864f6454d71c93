"""Regressions found reviewing the scale-out code (Redis store, jobs of every kind)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from service.engine import BenchmarkEngine
from service.errors import StoreUnavailableError


class _FlakyLeases:
    """A store whose lease renewal fails once (Redis restarting), then works."""

    lease_renew_s = 0.01
    lease_ttl_s = 10.0

    def __init__(self) -> None:
        self.renewals = 0

    def renew_lease(self, key: str, owner: str, ttl_s: float) -> bool:
        self.renewals += 1
        if self.renewals == 1:
            raise StoreUnavailableError("the shared store did not answer")
        return True


def test_lease_renewal_survives_a_store_outage() -> None:
    """A renewal that fails while Redis is away must not end the renewing: else the lease
    expires mid-computation and another replica computes the same question too."""
    store = _FlakyLeases()
    engine: Any = SimpleNamespace(results=store, _owner="me")

    async def main() -> None:
        renewing = asyncio.create_task(BenchmarkEngine._renew_lease(engine, "question"))
        deadline = time.monotonic() + 5
        while store.renewals < 3 and time.monotonic() < deadline and not renewing.done():
            await asyncio.sleep(0.01)
        assert not renewing.done(), "the renewing task ended after one failed renewal"
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
        assert store.renewals >= 3

    asyncio.run(main())
