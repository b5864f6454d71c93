"""The tenants database: keys and claims ``(tenant, kind, id)`` in
``<data_dir>/tenants.sqlite3``, one SQLite transaction per change."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.sqlite import Database
from service.tenants.keys import KeyInfo, KeyNameError, check_name, key_digest, new_key

logger = logging.getLogger(__name__)


DATASET, BENCHMARK, MODEL, PLOT, JOB = "dataset", "benchmark", "model", "plot", "job"
SWEEP, STABILITY = "sweep", "stability"
# Claims made from a dataset, which go with it (their own children, plots, with them).
FROM_DATASET = (BENCHMARK, SWEEP, STABILITY)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS environment_keys (
    name TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS claims (
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    parent TEXT,
    bytes INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    last_used REAL NOT NULL,
    meta TEXT,
    inline INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, kind, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS claims_by_id ON claims (kind, id);
CREATE INDEX IF NOT EXISTS claims_by_parent ON claims (tenant, parent);
CREATE INDEX IF NOT EXISTS claims_by_use ON claims (kind, last_used);
"""


# Columns added since the claims table was first made, for a database made before them.
_ADDED_COLUMNS = {"meta": "TEXT", "inline": "INTEGER NOT NULL DEFAULT 0"}
# Times a claim on data the caller just sent is tried again when the bytes were removed
# (by another tenant's roll-back or delete) between their store and the claim.
STORE_AGAIN_TRIES = 3


@dataclass(frozen=True)
class DatasetMeta:
    """What a tenant told of a dataset it sent: the claim's, never the shared bytes'.

    Two tenants sending the same numbers share the bytes, each under its own name.
    """

    name: str | None
    format: str
    feature_names: list[str] | None = None
    inline: bool = False
    # A table's columns under the tenant's names (the shared bytes name them by place).
    columns: list[dict[str, Any]] | None = None

    def shown(self) -> dict[str, Any]:
        """The fields of a dataset's description that are the tenant's own."""
        own = {"name": self.name, "format": self.format, "feature_names": self.feature_names}
        return own if self.columns is None else {**own, "columns": self.columns}


INLINE = DatasetMeta(name=None, format="json", inline=True)


def _add_columns(db: sqlite3.Connection) -> None:
    columns = {row[1] for row in db.execute("PRAGMA table_info(claims)")}
    for column, declared in _ADDED_COLUMNS.items():
        if column not in columns:
            # Another process may add it first.
            with contextlib.suppress(sqlite3.OperationalError):
                db.execute(f"ALTER TABLE claims ADD COLUMN {column} {declared}")


class TenantStore:
    """Keys and claims in one SQLite file (WAL; several processes may share it).

    Every method blocks on SQLite: call them from a thread, not the event loop.
    """

    def __init__(self, path: Path, env_keys: dict[str, str] | None = None) -> None:
        self.path = path
        self.env_keys = env_keys or {}
        self._db = Database(
            path, schema=_SCHEMA, what="keys database", busy_timeout_s=5.0, prepare=_add_columns
        )
        self._connection = self._db.connection
        # One write transaction (SQLite's lock, across processes); the methods called
        # inside it join it, so that what they read and write cannot interleave with
        # another claim or release.
        self.transaction = self._db.transaction

    # Keys

    def record_environment(self) -> None:
        """Write the names of this process's CLUSTERBENCH_API_KEYS (never the keys) to the
        store, for ``keys create`` run from a shell that does not have them."""
        with self.transaction() as db:
            db.execute("DELETE FROM environment_keys")
            db.executemany(
                "INSERT INTO environment_keys (name) VALUES (?)",
                [(name,) for name in set(self.env_keys.values())],
            )

    def environment_names(self) -> set[str]:
        """Names with a key in CLUSTERBENCH_API_KEYS, here or in the server's environment."""
        rows = self._connection().execute("SELECT name FROM environment_keys")
        return set(self.env_keys.values()) | {row[0] for row in rows}

    def create_key(self, name: str) -> str:
        """Make a key for ``name`` and return it; only its digest is kept."""
        check_name(name)
        if name in self.environment_names():
            raise KeyNameError(f"{name!r} already has a key in CLUSTERBENCH_API_KEYS")
        key = new_key()
        try:
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO keys (name, hash, created_at) VALUES (?, ?, ?)",
                    (name, key_digest(key), time.time()),
                )
        except sqlite3.IntegrityError:
            raise KeyNameError(f"a key named {name!r} exists; revoke it first") from None
        return key

    def revoke_key(self, name: str) -> bool:
        """Forget ``name``'s key; whether there was one. What the tenant holds stays."""
        with self.transaction() as db:
            return db.execute("DELETE FROM keys WHERE name = ?", (name,)).rowcount > 0

    def list_keys(self) -> list[KeyInfo]:
        rows = self._connection().execute("SELECT name, created_at FROM keys ORDER BY name")
        found = [KeyInfo(name, created, "store") for name, created in rows]
        found += [KeyInfo(name, None, "environment") for name in sorted(self.environment_names())]
        return found

    def has_keys(self) -> bool:
        if self.env_keys:
            return True
        return self._connection().execute("SELECT 1 FROM keys LIMIT 1").fetchone() is not None

    def authenticate(self, key: str) -> str | None:
        """The tenant whose key this is, or None."""
        digest = key_digest(key)
        found = None
        for known, name in self.env_keys.items():
            if hmac.compare_digest(known, digest):
                found = name
        row = (
            self._connection()
            .execute("SELECT name, hash FROM keys WHERE hash = ?", (digest,))
            .fetchone()
        )
        if row is not None and hmac.compare_digest(row[1], digest):
            found = row[0]
        return found

    # Claims

    def claim(
        self,
        tenant: str,
        kind: str,
        id_: str,
        *,
        parent: str | None = None,
        nbytes: int = 0,
        meta: DatasetMeta | None = None,
    ) -> bool:
        """Record that ``tenant`` holds ``id_`` (or mark it used); whether it is new.

        ``meta`` is what the tenant told of a dataset; an upload of data the tenant held
        as inline data makes it the tenant's upload, under the upload's name.
        """
        now = time.time()
        stored = None if meta is None else json.dumps(meta.shown())
        with self.transaction() as db:
            updated = db.execute(
                "UPDATE claims SET last_used = ? WHERE tenant = ? AND kind = ? AND id = ?",
                (now, tenant, kind, id_),
            ).rowcount
            if updated:
                if meta is not None and not meta.inline:
                    db.execute(
                        "UPDATE claims SET meta = ?, inline = 0"
                        " WHERE tenant = ? AND kind = ? AND id = ? AND inline",
                        (stored, tenant, kind, id_),
                    )
                return False
            db.execute(
                "INSERT INTO claims (tenant, kind, id, parent, bytes, created_at, last_used,"
                " meta, inline) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (tenant, kind, id_, parent, nbytes, now, now, stored, bool(meta and meta.inline)),
            )
            return True

    def meta(self, tenant: str, dataset_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """What ``tenant`` told of each of ``dataset_ids`` it holds (claims made before
        tenants told anything have none)."""
        found: dict[str, dict[str, Any]] = {}
        db = self._connection()
        for dataset_id in dataset_ids:
            row = db.execute(
                "SELECT meta FROM claims WHERE tenant = ? AND kind = ? AND id = ?",
                (tenant, DATASET, dataset_id),
            ).fetchone()
            if row is not None and row[0] is not None:
                found[dataset_id] = json.loads(row[0])
        return found

    def inline_held(self, tenant: str) -> list[tuple[str, int]]:
        """(id, bytes) of the inline data ``tenant`` holds, least recently used first."""
        rows = self._connection().execute(
            "SELECT id, bytes FROM claims WHERE tenant = ? AND kind = ? AND inline"
            " ORDER BY last_used, id",
            (tenant, DATASET),
        )
        return [(id_, nbytes) for id_, nbytes in rows]

    def holds(self, tenant: str, kind: str, id_: str) -> bool:
        row = (
            self._connection()
            .execute(
                "SELECT 1 FROM claims WHERE tenant = ? AND kind = ? AND id = ?", (tenant, kind, id_)
            )
            .fetchone()
        )
        return row is not None

    def held(self, tenant: str, kind: str) -> list[str]:
        rows = self._connection().execute(
            "SELECT id FROM claims WHERE tenant = ? AND kind = ? ORDER BY created_at, id",
            (tenant, kind),
        )
        return [row[0] for row in rows]

    def release(self, tenant: str, kind: str, id_: str) -> int | None:
        """Drop ``tenant``'s claim on ``id_``: None if it had none, else the claims left
        on ``id_`` (all tenants)."""
        with self.transaction() as db:
            if not _drop_claim(db, tenant, kind, id_):
                return None
            return _claims_on(db, kind, id_)

    def forget(self, kind: str, ids: Sequence[str]) -> None:
        """Drop every tenant's claims on ``ids`` (things of ``kind`` that are gone)."""
        with self.transaction() as db:
            db.executemany(
                "DELETE FROM claims WHERE kind = ? AND id = ?", [(kind, id_) for id_ in ids]
            )

    def has_child(self, tenant: str, kind: str, parent: str) -> bool:
        """Whether ``tenant`` holds something of ``kind`` made from ``parent``."""
        row = (
            self._connection()
            .execute(
                "SELECT 1 FROM claims WHERE tenant = ? AND kind = ? AND parent = ? LIMIT 1",
                (tenant, kind, parent),
            )
            .fetchone()
        )
        return row is not None

    def claims_on(self, kind: str, id_: str) -> int:
        return _claims_on(self._connection(), kind, id_)

    def used_bytes(self, tenant: str) -> int:
        used: int = (
            self._connection()
            .execute("SELECT coalesce(sum(bytes), 0) FROM claims WHERE tenant = ?", (tenant,))
            .fetchone()[0]
        )
        return used

    def unused_since(self, kind: str, before: float) -> list[tuple[str, str]]:
        """(tenant, id) of the claims of ``kind`` last used before ``before`` (epoch s)."""
        rows = self._connection().execute(
            "SELECT tenant, id FROM claims WHERE kind = ? AND last_used < ?", (kind, before)
        )
        return [(tenant, id_) for tenant, id_ in rows]

    def expire_dataset(self, tenant: str, dataset_id: str) -> int | None:
        """Drop ``tenant``'s claim on a dataset with its benchmarks, models and plots.

        Returns the claims left on the dataset (None if the tenant had none).
        """
        with self.transaction() as db:
            if not _drop_claim(db, tenant, DATASET, dataset_id):
                return None
            made = [
                (row[0], row[1])
                for row in db.execute(
                    "SELECT kind, id FROM claims WHERE tenant = ? AND parent = ?"
                    f" AND kind IN ({', '.join('?' * len(FROM_DATASET))})",
                    (tenant, dataset_id, *FROM_DATASET),
                )
            ]
            for kind, made_id in made:
                db.execute("DELETE FROM claims WHERE tenant = ? AND parent = ?", (tenant, made_id))
                _drop_claim(db, tenant, kind, made_id)
            return _claims_on(db, DATASET, dataset_id)

    def release_benchmark(
        self, tenant: str, benchmark_id: str, keep: dict[str, str] | None = None
    ) -> int | None:
        """Drop ``tenant``'s claim on a benchmark with its models and plots: None if it
        had none, else the claims left on the benchmark (all tenants).

        ``keep`` maps the models another benchmark of the tenant uses too to that
        benchmark: those claims stay, under it.
        """
        with self.transaction() as db:
            if not _drop_claim(db, tenant, BENCHMARK, benchmark_id):
                return None
            for model_id, other in (keep or {}).items():
                db.execute(
                    "UPDATE claims SET parent = ? WHERE tenant = ? AND kind = ? AND id = ?",
                    (other, tenant, MODEL, model_id),
                )
            db.execute(
                "DELETE FROM claims WHERE tenant = ? AND kind IN (?, ?) AND parent = ?",
                (tenant, MODEL, PLOT, benchmark_id),
            )
            return _claims_on(db, BENCHMARK, benchmark_id)

    def close(self) -> None:
        self._db.close()


def _drop_claim(db: sqlite3.Connection, tenant: str, kind: str, id_: str) -> bool:
    """Delete ``tenant``'s claim on ``id_``; whether it had one."""
    return bool(
        db.execute(
            "DELETE FROM claims WHERE tenant = ? AND kind = ? AND id = ?", (tenant, kind, id_)
        ).rowcount
    )


def _claims_on(db: sqlite3.Connection, kind: str, id_: str) -> int:
    """The claims on ``id_``, all tenants'."""
    count: int = db.execute(
        "SELECT count(*) FROM claims WHERE kind = ? AND id = ?", (kind, id_)
    ).fetchone()[0]
    return count


def folder_bytes(folder: Path) -> int:
    try:
        return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    except FileNotFoundError:
        return 0
