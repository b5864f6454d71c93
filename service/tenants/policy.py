"""Tenancy as the API uses it: who may use what, quotas, claims made and released
with the content-addressed stores, and expiry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from anyio import to_thread

from service.datasets import BUILTIN_LOADERS, DatasetInfo, DatasetStore, is_id
from service.errors import (
    DatasetConflictError,
    DatasetNotFoundError,
    QuotaExceededError,
)
from service.tenants.keys import KEYS_CHECK_S
from service.tenants.store import (
    BENCHMARK,
    DATASET,
    INLINE,
    JOB,
    MODEL,
    PLOT,
    STORE_AGAIN_TRIES,
    DatasetMeta,
    TenantStore,
    folder_bytes,
)

logger = logging.getLogger(__name__)


T = TypeVar("T")


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

    async def _claim_made(
        self, tenant: str | None, kind: str, id_: str, parent: str, nbytes: int
    ) -> None:
        """Claim ``id_``, made from ``parent``, for ``tenant`` within its quota (none
        without a tenant)."""
        if tenant is not None:
            await self._run(
                lambda: self._claim_within(tenant, kind, id_, parent=parent, nbytes=nbytes)
            )

    async def claim_plot(
        self, tenant: str | None, benchmark_id: str, key: str, nbytes: int
    ) -> None:
        await self._claim_made(tenant, PLOT, f"{benchmark_id}:{key}", benchmark_id, nbytes)

    async def claim_result(
        self, tenant: str | None, kind: str, result_id: str, dataset_id: str, nbytes: int
    ) -> None:
        """Give ``tenant`` a sweep or stability run (``kind``) it asked for."""
        await self._claim_made(tenant, kind, result_id, dataset_id, nbytes)

    async def claim_result_plot(
        self, tenant: str | None, kind: str, result_id: str, nbytes: int
    ) -> None:
        """Count the plot of a sweep (or any result of ``kind``) against ``tenant``'s quota."""
        await self._claim_made(tenant, PLOT, f"{kind}:{result_id}", result_id, nbytes)

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
