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

from service.tenants.keys import KeyNameError, parse_keys
from service.tenants.policy import Tenancy
from service.tenants.store import BENCHMARK, DATASET, JOB, MODEL, SWEEP, DatasetMeta, TenantStore

__all__ = [
    "BENCHMARK",
    "DATASET",
    "JOB",
    "MODEL",
    "SWEEP",
    "DatasetMeta",
    "KeyNameError",
    "Tenancy",
    "TenantStore",
    "parse_keys",
]
