"""Leases in the result cache's SQLite file: one computation per question across the
processes that share the data directory. Short and renewed by their owner, they name the
owner's process, so a lease whose process died is free at once."""

from __future__ import annotations

import logging
import time

from service import processes
from service.cache_db import CacheDatabase

logger = logging.getLogger(__name__)


class SQLiteLeases(CacheDatabase):
    """:class:`service.result_backend.Leases` in the ``leases`` table."""

    # Leases live this long unless their owner renews them, which it does this often.
    lease_ttl_s = 10.0
    lease_renew_s = 3.0

    def try_lease(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take the lease on ``key`` unless another owner holds it: unexpired, and held
        by a process that runs, as far as this host can tell."""
        process = processes.this_process()

        def take() -> bool:
            now = time.time()
            with self._transaction() as db:
                row = db.execute(
                    "SELECT owner, expires, process FROM leases WHERE key = ?", (key,)
                ).fetchone()
                if row is not None:
                    if row[1] >= now:
                        if processes.process_alive(row[2]):
                            return False
                        logger.warning(
                            "lease on %s held by %s, whose process (%s) is gone: taken over",
                            key,
                            row[0],
                            row[2],
                        )
                    db.execute("DELETE FROM leases WHERE key = ?", (key,))
                db.execute(
                    "INSERT INTO leases (key, owner, expires, process) VALUES (?, ?, ?, ?)",
                    (key, owner, now + ttl_s, process),
                )
            return True

        # A store that cannot say who computes lets everyone compute.
        return self._safely("lease", take, True)

    def renew_lease(self, key: str, owner: str, ttl_s: float) -> bool:
        """Extend ``owner``'s lease on ``key`` by ``ttl_s`` from now; False if it lost it."""

        def extend() -> bool:
            with self._transaction() as db:
                return bool(
                    db.execute(
                        "UPDATE leases SET expires = ? WHERE key = ? AND owner = ?",
                        (time.time() + ttl_s, key, owner),
                    ).rowcount
                )

        return self._safely("lease renewal", extend, True)

    def release(self, key: str, owner: str) -> None:
        def drop() -> None:
            with self._transaction() as db:
                db.execute("DELETE FROM leases WHERE key = ? AND owner = ?", (key, owner))

        self._safely("lease release", drop, None)
