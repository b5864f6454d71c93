"""Tenants: API keys, what each tenant holds, storage quotas and expiry. No HTTP here.

A tenant is the name of a key. What a tenant may see is recorded as *claims*
``(tenant, kind, id)`` in ``<data_dir>/tenants.sqlite3``, beside the content-addressed
stores, which stay shared: the same bytes sent by two tenants are stored once and
claimed twice, and they go when the last claim goes. Kinds are ``dataset``,
``benchmark``, ``model`` and ``plot``; a claim's ``parent`` is the dataset of a
benchmark, or the benchmark of a model or a plot, so that an expired dataset takes
what was made from it along.

Keys are high-entropy random strings: the store keeps their sha256 only (a salt or a
slow hash adds nothing against guessing 256 random bits), and compares digests with
:func:`hmac.compare_digest`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from anyio import to_thread

from service.datasets import BUILTIN_LOADERS, DatasetInfo, DatasetStore, is_id
from service.errors import (
    DatasetConflictError,
    DatasetNotFoundError,
    QuotaExceededError,
)
from service.sqlite import Database

logger = logging.getLogger(__name__)

T = TypeVar("T")

KEY_PREFIX = "cbk_"
# The shortest key CLUSTERBENCH_API_KEYS may hold: 24 random characters are over 128 bits,
# past guessing at any rate; a short human-made key is not.
MIN_KEY_CHARS = 24
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# How long "is any key configured?" is remembered: a key made by the CLI while the
# server runs closes the service within this time, without a query per request.
KEYS_CHECK_S = 1.0

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


class KeyNameError(ValueError):
    """A key name the store does not accept, or one that is already taken."""


def new_key() -> str:
    """A fresh API key: 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise KeyNameError(
            f"{name!r} is not a key name: 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_keys(text: str) -> dict[str, str]:
    """``"name:key,name:key"`` -> digest of each key -> its name.

    Raises ValueError naming the entry (never the key) that is malformed.
    """
    digests: dict[str, str] = {}
    for position, entry in enumerate(text.split(","), start=1):
        if not entry.strip():
            continue
        name, sep, key = entry.strip().partition(":")
        if not sep or not key:
            raise ValueError(
                f"CLUSTERBENCH_API_KEYS: entry {position} is not 'name:key'"
                + (f" (name {name!r})" if sep else "")
            )
        check_name(name)
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(
                f"CLUSTERBENCH_API_KEYS: the key of {name!r} (entry {position}) is shorter than "
                f"{MIN_KEY_CHARS} characters; use a random one, e.g. from "
                "'python -c \"import secrets; print(secrets.token_urlsafe(32))\"'"
            )
        digests[key_digest(key)] = check_name(name)
    return digests


@dataclass(frozen=True)
class KeyInfo:
    name: str
    created_at: float | None
    source: str  # "store" or "environment"


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
            deleted = db.execute(
                "DELETE FROM claims WHERE tenant = ? AND kind = ? AND id = ?", (tenant, kind, id_)
            ).rowcount
            if not deleted:
                return None
            left: int = db.execute(
                "SELECT count(*) FROM claims WHERE kind = ? AND id = ?", (kind, id_)
            ).fetchone()[0]
            return left

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
        count: int = (
            self._connection()
            .execute("SELECT count(*) FROM claims WHERE kind = ? AND id = ?", (kind, id_))
            .fetchone()[0]
        )
        return count

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
            deleted = db.execute(
                "DELETE FROM claims WHERE tenant = ? AND kind = ? AND id = ?",
                (tenant, DATASET, dataset_id),
            ).rowcount
            if not deleted:
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
                db.execute(
                    "DELETE FROM claims WHERE tenant = ? AND kind = ? AND id = ?",
                    (tenant, kind, made_id),
                )
            left: int = db.execute(
                "SELECT count(*) FROM claims WHERE kind = ? AND id = ?", (DATASET, dataset_id)
            ).fetchone()[0]
            return left

    def release_benchmark(
        self, tenant: str, benchmark_id: str, keep: dict[str, str] | None = None
    ) -> int | None:
        """Drop ``tenant``'s claim on a benchmark with its models and plots: None if it
        had none, else the claims left on the benchmark (all tenants).

        ``keep`` maps the models another benchmark of the tenant uses too to that
        benchmark: those claims stay, under it.
        """
        with self.transaction() as db:
            deleted = db.execute(
                "DELETE FROM claims WHERE tenant = ? AND kind = ? AND id = ?",
                (tenant, BENCHMARK, benchmark_id),
            ).rowcount
            if not deleted:
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
            left: int = db.execute(
                "SELECT count(*) FROM claims WHERE kind = ? AND id = ?", (BENCHMARK, benchmark_id)
            ).fetchone()[0]
            return left

    def close(self) -> None:
        self._db.close()


def folder_bytes(folder: Path) -> int:
    try:
        return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    except FileNotFoundError:
        return 0


class Tenancy:
    """What the routes ask about tenants, off the event loop.

    ``tenant`` is None in single-user mode (no key configured): then nothing is
    checked or recorded, and the service behaves as it did before tenants existed.
    """

    def __init__(
        self,
        store: TenantStore,
        datasets: DatasetStore,
        *,
        quota_bytes: int | None = None,
        dataset_ttl_s: float | None = None,
        inline_max_bytes: int | None = None,
        builtin: Callable[[str], Awaitable[DatasetInfo]] | None = None,
    ) -> None:
        self.store = store
        self.datasets = datasets
        # A built-in dataset's stored copy (the engine's: written by a worker).
        self.builtin = builtin or (lambda name: self._run(lambda: datasets.builtin(name)))
        self.quota_bytes = quota_bytes
        # Each tenant's inline data is bounded on its own: one tenant's never pushes
        # another's out.
        self.inline_max_bytes = inline_max_bytes
        self.dataset_ttl_s = dataset_ttl_s
        self._keys_checked = (-float("inf"), False)
        self._builtin_ids: frozenset[str] | None = None

    async def _run(self, fn: Callable[[], T]) -> T:
        return await to_thread.run_sync(fn)

    # Keys

    async def keys_required(self) -> bool:
        """Whether any key exists (checked at most every ``KEYS_CHECK_S`` seconds)."""
        if self.store.env_keys:
            return True
        checked_at, required = self._keys_checked
        if time.monotonic() - checked_at < KEYS_CHECK_S:
            return required
        required = await self._run(self.store.has_keys)
        self._keys_checked = (time.monotonic(), required)
        return required

    async def authenticate(self, key: str) -> str | None:
        return await self._run(lambda: self.store.authenticate(key))

    # Datasets

    async def builtin_ids(self) -> frozenset[str]:
        if self._builtin_ids is None:
            self._builtin_ids = frozenset([(await self.builtin(n)).id for n in BUILTIN_LOADERS])
        return self._builtin_ids

    async def may_use_dataset(
        self, tenant: str | None, dataset_id: str, *, use: bool = True
    ) -> bool:
        """Whether ``tenant`` may see the dataset: a built-in, or one it holds.

        With ``use``, a held dataset is marked as used now (its expiry starts again).
        """
        if tenant is None or dataset_id in await self.builtin_ids():
            return True

        def check() -> bool:
            if not self.store.holds(tenant, DATASET, dataset_id):
                return False
            if use:
                self.store.claim(tenant, DATASET, dataset_id)
            return True

        return await self._run(check)

    def quota_check(self, tenant: str, adding: int) -> None:
        """Raise QuotaExceededError when ``adding`` bytes take ``tenant`` past its quota."""
        if self.quota_bytes is None:
            return
        used = self.store.used_bytes(tenant)
        if used + adding > self.quota_bytes:
            raise QuotaExceededError(
                f"storing this ({adding} bytes) would take tenant {tenant!r} past its quota: "
                f"{used} bytes used of {self.quota_bytes} allowed "
                "(CLUSTERBENCH_TENANT_QUOTA_BYTES); delete datasets to make room",
                used=used,
                allowed=self.quota_bytes,
            )

    async def check_quota(self, tenant: str | None, adding: int = 0) -> None:
        """Refuse new work for a tenant already at its quota (``adding`` more bytes)."""
        if tenant is not None and self.quota_bytes is not None:
            await self._run(lambda: self.quota_check(tenant, adding if adding else 1))

    def _claim_within(self, tenant: str, kind: str, id_: str, **fields: Any) -> bool:
        """Claim ``id_`` for ``tenant``, refusing (403) a new claim past its quota.

        The check and the claim are one transaction: claims stored at the same moment
        (concurrent computations finishing) cannot each pass the check and together pass
        the quota. Blocking: run it in a thread.
        """
        with self.store.transaction():
            if not self.store.holds(tenant, kind, id_):
                self.quota_check(tenant, fields.get("nbytes", 0))
            return self.store.claim(tenant, kind, id_, **fields)

    def _drop_unheld(self, dataset_id: str) -> None:
        """Remove a dataset's bytes if no tenant holds them. Called inside the store's
        transaction: no claim can land between the count and the removal."""
        if self.store.claims_on(DATASET, dataset_id) == 0:
            with contextlib.suppress(DatasetNotFoundError):
                self.datasets.delete(dataset_id)

    async def claim_dataset(
        self,
        tenant: str | None,
        dataset_id: str,
        sent: DatasetMeta = INLINE,
        *,
        store_again: Callable[[], Awaitable[object]] | None = None,
    ) -> bool:
        """Give ``tenant`` the dataset it sent (``sent`` says how, under what name),
        within its quota; or mark one it holds as used.

        Returns whether the claim is new. Past the quota, the claim is not made, the
        bytes are removed if nobody holds them, and QuotaExceededError is raised. Bytes
        removed between their store and this claim (another tenant rolled back or
        deleted them) are stored again by ``store_again``. A tenant's inline data past
        ``inline_max_bytes`` loses its least recently used (its claims; the bytes go
        when nobody else holds them).
        """
        if tenant is None or dataset_id in await self.builtin_ids():
            return False
        folder = self.datasets.root / dataset_id

        def claim() -> bool | None:
            with self.store.transaction():
                if self.store.holds(tenant, DATASET, dataset_id):
                    return self.store.claim(tenant, DATASET, dataset_id, meta=sent)
                if not (folder / "meta.json").exists():
                    return None
                size = folder_bytes(folder)
                try:
                    self.quota_check(tenant, size)
                except QuotaExceededError:
                    self._drop_unheld(dataset_id)
                    raise
                return self.store.claim(tenant, DATASET, dataset_id, nbytes=size, meta=sent)

        for _ in range(STORE_AGAIN_TRIES):
            created = await self._run(claim)
            if created is not None or store_again is None:
                break
            await store_again()
        if created is None:
            raise DatasetConflictError(
                f"the dataset {dataset_id} was removed while it was being stored "
                "(another request deleted the same data); send it again"
            )
        if sent.inline and self.inline_max_bytes is not None:
            await self._run(lambda: self._bound_inline(tenant, keep=dataset_id))
        return created

    def _bound_inline(self, tenant: str, *, keep: str) -> list[str]:
        """Drop ``tenant``'s least recently used inline data past ``inline_max_bytes``,
        never ``keep``; returns the ids dropped."""
        assert self.inline_max_bytes is not None
        with self.store.transaction():
            held = self.store.inline_held(tenant)
            total = sum(nbytes for _, nbytes in held)
            dropped = []
            for dataset_id, nbytes in held:
                if total <= self.inline_max_bytes:
                    break
                if dataset_id == keep:
                    continue
                self.store.release(tenant, DATASET, dataset_id)
                self._drop_unheld(dataset_id)
                dropped.append(dataset_id)
                total -= nbytes
        return dropped

    async def listed_datasets(self, tenant: str) -> list[str]:
        """The datasets ``tenant`` uploaded: data it only sent inline is not listed."""
        inline = {id_ for id_, _ in await self._run(lambda: self.store.inline_held(tenant))}
        held = await self._run(lambda: self.store.held(tenant, DATASET))
        return [id_ for id_ in held if id_ not in inline]

    async def described(self, tenant: str | None, infos: list[DatasetInfo]) -> list[dict[str, Any]]:
        """The datasets as ``tenant`` sees them: under the name, format and columns it
        sent them with, never another tenant's (built-ins as they are)."""
        shown = [info.described() for info in infos]
        if tenant is None:
            return shown
        told = await self._run(lambda: self.store.meta(tenant, [info.id for info in infos]))
        for described in shown:
            described.update(told.get(described["id"], {}))
        return shown

    async def release_dataset(self, tenant: str, dataset_id: str) -> bool:
        """Drop the tenant's claim; the bytes go with the last claim. Whether it held one."""

        def release() -> bool:
            with self.store.transaction():
                if self.store.release(tenant, DATASET, dataset_id) is None:
                    return False
                self._drop_unheld(dataset_id)
                return True

        return await self._run(release)

    # Benchmarks, models and plots

    async def holds(self, tenant: str | None, kind: str, id_: str) -> bool:
        if tenant is None:
            return True
        return await self._run(lambda: self.store.holds(tenant, kind, id_))

    async def claim_benchmark(
        self,
        tenant: str | None,
        benchmark_id: str,
        dataset_id: str,
        nbytes: int,
        models: dict[str, int],
    ) -> None:
        """Give ``tenant`` a benchmark it asked for, and its models (id -> bytes)."""
        if tenant is None:
            return

        def claim() -> None:
            with self.store.transaction():
                if not self.store.holds(tenant, BENCHMARK, benchmark_id):
                    self.quota_check(tenant, nbytes + sum(models.values()))
                self.store.claim(tenant, BENCHMARK, benchmark_id, parent=dataset_id, nbytes=nbytes)
                for model_id, size in models.items():
                    self.store.claim(tenant, MODEL, model_id, parent=benchmark_id, nbytes=size)

        await self._run(claim)

    async def held_benchmarks(self, tenant: str) -> list[str]:
        return await self._run(lambda: self.store.held(tenant, BENCHMARK))

    async def release_benchmark(
        self, tenant: str, benchmark_id: str, keep: dict[str, str] | None = None
    ) -> int | None:
        """Drop the tenant's claim on a benchmark (and its models and plots, but those in
        ``keep``, model -> another benchmark using it): None if it had none, else how
        many tenants still hold it."""
        return await self._run(lambda: self.store.release_benchmark(tenant, benchmark_id, keep))

    async def claim_job(self, tenant: str | None, job_id: str, result_id: str) -> None:
        """Give ``tenant`` the job it asked for (or joined): its events, its cancel, and
        the result it computes (a benchmark, a sweep, a stability run) once it has
        succeeded."""
        if tenant is not None:
            await self._run(
                lambda: self.store.claim(tenant, JOB, job_id, parent=result_id, nbytes=0)
            )

    async def others_hold(self, tenant: str, kind: str, id_: str) -> bool:
        """Whether a tenant other than ``tenant`` holds ``id_`` too."""
        return await self._run(lambda: self.store.claims_on(kind, id_) > 1)

    async def release(self, tenant: str, kind: str, id_: str) -> None:
        """Drop ``tenant``'s claim on ``id_`` (a job it withdraws from)."""
        await self._run(lambda: self.store.release(tenant, kind, id_))

    async def forget_jobs(self, job_ids: list[str]) -> None:
        """Drop every tenant's claim on jobs that are gone (past their retention)."""
        await self._run(lambda: self.store.forget(JOB, job_ids))

    async def held_jobs(self, tenant: str) -> list[str]:
        return await self._run(lambda: self.store.held(tenant, JOB))

    async def awaits_result(self, tenant: str | None, result_id: str) -> bool:
        """Whether ``tenant`` asked for a job computing ``result_id``."""
        if tenant is None:
            return True
        return await self._run(lambda: self.store.has_child(tenant, JOB, result_id))

    async def claim_plot(
        self, tenant: str | None, benchmark_id: str, key: str, nbytes: int
    ) -> None:
        if tenant is not None:
            await self._run(
                lambda: self._claim_within(
                    tenant, PLOT, f"{benchmark_id}:{key}", parent=benchmark_id, nbytes=nbytes
                )
            )

    async def claim_result(
        self, tenant: str | None, kind: str, result_id: str, dataset_id: str, nbytes: int
    ) -> None:
        """Give ``tenant`` a sweep or stability run (``kind``) it asked for."""
        if tenant is not None:
            await self._run(
                lambda: self._claim_within(
                    tenant, kind, result_id, parent=dataset_id, nbytes=nbytes
                )
            )

    async def claim_result_plot(
        self, tenant: str | None, kind: str, result_id: str, nbytes: int
    ) -> None:
        """Count the plot of a sweep (or any result of ``kind``) against ``tenant``'s quota."""
        if tenant is not None:
            await self._run(
                lambda: self._claim_within(
                    tenant, PLOT, f"{kind}:{result_id}", parent=result_id, nbytes=nbytes
                )
            )

    # Expiry

    def sweep(self, now: float | None = None) -> list[tuple[str, str]]:
        """Expire datasets unused for ``dataset_ttl_s``; returns the (tenant, id) expired.

        Also drops the claims on inline data the dataset store pruned (it keeps inline
        data within a bound): they hold no bytes any more, and must not count against a
        quota. Blocking: run it in a thread.
        """
        for tenant, dataset_id in self.store.unused_since(DATASET, float("inf")):
            if not (self.datasets.root / dataset_id / "meta.json").exists():
                self.store.release(tenant, DATASET, dataset_id)
        if self.dataset_ttl_s is None:
            return []
        before = (time.time() if now is None else now) - self.dataset_ttl_s
        expired = []
        for tenant, dataset_id in self.store.unused_since(DATASET, before):
            with self.store.transaction():
                if self.store.expire_dataset(tenant, dataset_id) is None:
                    continue
                expired.append((tenant, dataset_id))
                if is_id(dataset_id):
                    self._drop_unheld(dataset_id)
        if expired:
            logger.info(
                "expired %d dataset claim(s) unused for %g s", len(expired), self.dataset_ttl_s
            )
        return expired

    def sweep_interval_s(self) -> float:
        """How often to sweep: a quarter of the TTL, between 0.2 s and a minute."""
        ttl = self.dataset_ttl_s or 60.0
        return min(60.0, max(0.2, ttl / 4))

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s())
            try:
                await self._run(self.sweep)
            except Exception:
                logger.exception("the expiry sweep failed; it runs again later")
