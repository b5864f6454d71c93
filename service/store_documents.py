"""Documents in the result cache's SQLite file: sweeps, stability runs and their
plots, by kind and id. A table of their own beside the benchmarks' (added, not
reshaped), bounded by the same ``max_bytes`` with its own LRU."""

from __future__ import annotations

import logging
import sqlite3
import time

from service.cache_db import CacheDatabase, sha256

logger = logging.getLogger(__name__)

DOCUMENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    data BLOB NOT NULL,
    sha TEXT NOT NULL,
    size INTEGER NOT NULL,
    accessed REAL NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX IF NOT EXISTS documents_accessed ON documents (accessed);
"""


class SQLiteDocuments(CacheDatabase):
    """:class:`service.result_backend.DocumentStore` in the ``documents`` table."""

    max_bytes: int

    def _documents(self) -> sqlite3.Connection:
        db = self._connection()
        if getattr(self._local, "documents_ready", None) != self._generation:
            db.executescript(DOCUMENTS_SCHEMA)
            self._local.documents_ready = self._generation
        return db

    def get_document(self, kind: str, key: str) -> bytes | None:
        """The bytes stored under (kind, key), or None (absent, evicted or corrupt)."""
        hot: bytes | None = self._memory.get((kind, key))
        if hot is not None:
            return hot

        def read() -> bytes | None:
            db = self._documents()
            row = db.execute(
                "SELECT data, sha FROM documents WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
            if row is None:
                return None
            data = bytes(row[0])
            if sha256(data) != row[1]:
                self.corrupt_entries += 1
                logger.warning("corrupt cached %s %s: dropped, will recompute", kind, key)
                with self._transaction() as tx:
                    tx.execute("DELETE FROM documents WHERE kind = ? AND key = ?", (kind, key))
                return None
            with self._transaction() as tx:
                tx.execute(
                    "UPDATE documents SET accessed = ? WHERE kind = ? AND key = ?",
                    (time.time(), kind, key),
                )
            return data

        found = self._safely(f"{kind} read", read, None)
        if found is not None:
            self._memory.put((kind, key), found, len(found))
        return found

    def put_document(self, kind: str, key: str, data: bytes) -> None:
        """Store ``data`` under (kind, key), then evict the least recently used past the bound."""
        self._memory.put((kind, key), data, len(data))

        def write() -> None:
            db = self._documents()
            with self._transaction() as tx:
                tx.execute(
                    "INSERT OR REPLACE INTO documents (kind, key, data, sha, size, accessed)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (kind, key, data, sha256(data), len(data), time.time()),
                )
            total = db.execute("SELECT COALESCE(SUM(size), 0) FROM documents").fetchone()[0]
            if total <= self.max_bytes:
                return
            victims = []
            for victim_kind, victim_key, size in db.execute(
                "SELECT kind, key, size FROM documents ORDER BY accessed ASC"
            ).fetchall():
                if total <= self.max_bytes:
                    break
                victims.append((victim_kind, victim_key))
                total -= size
            with self._transaction() as tx:
                tx.executemany("DELETE FROM documents WHERE kind = ? AND key = ?", victims)

        self._safely(f"{kind} write", write, None)
