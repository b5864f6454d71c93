"""Who is calling: the API key of a request, its tenant, its rate limit; host and CORS.

``Caller`` is the dependency every ``/v1`` route takes: the tenant's name, or None when
no key is configured at all (single-user mode: nothing is checked or recorded).
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError as LimitsStorageError
from limits.storage import storage_from_string
from limits.util import WindowStats
from prometheus_client import CollectorRegistry, Counter
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import compute
from service.api.problems import problem_response
from service.errors import (
    AuthenticationRequiredError,
    RateLimitedError,
    StoreUnavailableError,
    clip,
)
from service.redis_connection import is_full
from service.settings import Settings
from service.tenants import Tenancy

# Where the dependency leaves the RateLimit-* headers for RateLimitHeadersMiddleware.
_HEADERS_KEY = "clusterbench.rate_headers"

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="`Authorization: Bearer <key>`. Needed on /v1 when any key is configured.",
)
api_key_scheme = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="apiKey",
    description="The same key in `X-API-Key`, for clients that cannot set `Authorization`.",
)


def rate_limit_storage(settings: Settings) -> Storage:
    """Where rate-limit counters live: Redis when CLUSTERBENCH_REDIS_URL is set (one
    count for all replicas), else this process's memory (one replica)."""
    if settings.redis_url:
        storage = storage_from_string(
            f"async+{settings.redis_url}",
            implementation="redispy",
            key_prefix="clusterbench:limits",
            wrap_exceptions=True,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )
    else:
        storage = memory_storage()
    assert isinstance(storage, Storage)
    return storage


def memory_storage() -> Storage:
    """Counters in this process's memory."""
    storage = storage_from_string("async+memory://")
    assert isinstance(storage, Storage)
    return storage


class RateLimiter:
    """Requests per caller in a moving window (the ``limits`` library).

    ``namespace`` keeps the counts of one limit apart from another's in a shared store;
    ``setting`` is what a refusal names.
    """

    def __init__(
        self,
        rate: str,
        storage: Storage,
        *,
        namespace: str = "tenant",
        setting: str = "CLUSTERBENCH_RATE_LIMIT",
    ) -> None:
        self.item: RateLimitItem = parse(rate)
        self.limiter = MovingWindowRateLimiter(storage)
        self.namespace = namespace
        self.setting = setting
        # Where requests are counted while the shared store refuses writes (Redis at its
        # maxmemory): in this replica, so a full Redis neither lifts the limit nor turns
        # every request, reads included, into an error.
        self.local = MovingWindowRateLimiter(memory_storage())

    async def _window(
        self, limiter: MovingWindowRateLimiter, caller: str, *, hit: bool
    ) -> tuple[bool, WindowStats]:
        if hit:
            allowed = await limiter.hit(self.item, self.namespace, caller)
        else:
            allowed = await limiter.test(self.item, self.namespace, caller)
        return allowed, await limiter.get_window_stats(self.item, self.namespace, caller)

    async def hit(self, caller: str) -> dict[str, str]:
        """Count one request; the RateLimit-* headers, or RateLimitedError past the rate."""
        return await self._count(caller, hit=True)

    async def check(self, caller: str) -> None:
        """RateLimitedError if ``caller`` is past the rate, without counting a request."""
        await self._count(caller, hit=False)

    async def _count(self, caller: str, *, hit: bool) -> dict[str, str]:
        try:
            allowed, stats = await self._window(self.limiter, caller, hit=hit)
        except LimitsStorageError as exc:
            if not is_full(exc.storage_error):
                raise StoreUnavailableError(
                    "the shared store of rate-limit counters (Redis) did not answer "
                    f"({exc.storage_error!r}); retry shortly, the service recovers by itself"
                ) from exc
            allowed, stats = await self._window(self.local, caller, hit=hit)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        headers = {
            "RateLimit-Limit": str(self.item.amount),
            "RateLimit-Remaining": str(max(0, stats.remaining)),
            "RateLimit-Reset": str(reset),
        }
        if not allowed:
            raise RateLimitedError(
                f"more than {self.item.amount} requests per {self.item.multiples} "
                f"{self.item.GRANULARITY.name}(s) ({self.setting}); "
                f"try again in {max(1, reset)} s",
                retry_after=max(1, reset),
                rate_headers=headers,
            )
        return headers


async def get_tenant(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> str | None:
    """The calling tenant (None in single-user mode); 401 without a valid key, 429 past
    the rate limit."""
    tenancy: Tenancy = request.state.tenancy
    key = bearer.credentials if bearer is not None else api_key
    tenant: str | None = None
    if await tenancy.keys_required():
        failures: RateLimiter | None = request.app.state.auth_failure_limiter
        address = request.client.host if request.client is not None else ""
        if failures is not None:
            # An address past its failures is refused before its key is looked at:
            # guessing keys from it stops for the window.
            await failures.check(address)
        if key:
            tenant = await tenancy.authenticate(key)
        if tenant is None:
            if failures is not None:
                await failures.hit(address)
            if not key:
                raise AuthenticationRequiredError(
                    "this service needs an API key: send 'Authorization: Bearer <key>' "
                    "or 'X-API-Key: <key>'"
                )
            raise AuthenticationRequiredError(
                "the API key is not valid (unknown or revoked)", invalid=True
            )
        counter: Counter | None = request.app.state.tenant_requests
        if counter is not None:
            counter.labels(tenant).inc()
        # Its computations count against the tenant's share of the pools.
        compute.tenant.set(tenant)
    limiter: RateLimiter | None = request.app.state.rate_limiter
    if limiter is not None:
        headers = await limiter.hit(tenant or "")
        found = request.scope.get(_HEADERS_KEY)
        if isinstance(found, dict):
            found.update(headers)
    return tenant


Caller = Annotated[str | None, Depends(get_tenant)]


class RateLimitHeadersMiddleware:
    """Add the RateLimit-* headers that ``get_tenant`` found to the response.

    The routes build their own responses, so a dependency cannot set headers on them.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found: dict[str, str] = {}
        scope[_HEADERS_KEY] = found

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and found:
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [
                    (name.lower().encode(), value.encode())
                    for name, value in found.items()
                    if name.lower().encode() not in names
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class TrustedHosts:
    """Starlette's ``TrustedHostMiddleware`` deciding, a problem+json 400 answering.

    Without it, a web page on any site could reach a local install through a name that
    resolves to 127.0.0.1 (DNS rebinding), with the browser sending that name as Host.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self._check = TrustedHostMiddleware(self._accept, allowed_hosts, www_redirect=False)

    @staticmethod
    async def _accept(scope: Scope, receive: Receive, send: Send) -> None:
        scope["clusterbench.host_ok"] = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "*" in self.allowed_hosts:
            await self.app(scope, receive, send)
            return
        probe = dict(scope)

        async def discard(_: Message) -> None:
            return None

        await self._check(probe, receive, discard)
        if probe.get("clusterbench.host_ok"):
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        response = problem_response(
            400,
            f"this server does not answer to the host {clip(host)}; "
            "it answers to the names in CLUSTERBENCH_ALLOWED_HOSTS",
            title="Host not allowed",
        )
        await response(scope, receive, send)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_key(scheme: str, netloc: str) -> tuple[str, int | None]:
    """(host, port) of an origin or a Host header, the scheme's port filled in."""
    parts = urlsplit(f"{scheme}://{netloc}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "", port or _DEFAULT_PORTS.get(scheme))


class CrossSiteGuard:
    """Refuse requests that change something when a browser sent them from another site.

    A page on any site can make a browser POST a form (``multipart/form-data``,
    ``text/plain``) to this server without asking first; with no key configured nothing
    else would stop it from uploading or running work. Such requests carry ``Origin``:
    one that is neither this server's own (Swagger UI) nor in CLUSTERBENCH_CORS_ALLOW_ORIGINS
    is a 403. Clients other than browsers send no ``Origin`` and are not affected.
    """

    SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

    def __init__(self, app: ASGIApp, allowed_origins: list[str]) -> None:
        self.app = app
        self.allowed = {origin.rstrip("/").lower() for origin in allowed_origins}

    def _allowed(self, scope: Scope, origin: str) -> bool:
        if "*" in self.allowed or origin.rstrip("/").lower() in self.allowed:
            return True
        scheme, _, netloc = origin.partition("://")
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        return bool(netloc) and _origin_key(scheme, netloc) == _origin_key(scheme, host)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in self.SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), None)
        if origin is None or self._allowed(scope, origin):
            await self.app(scope, receive, send)
            return
        response = problem_response(
            403,
            f"a {scope['method']} from a page on {clip(origin)} is refused: that origin is "
            "not allowed by CLUSTERBENCH_CORS_ALLOW_ORIGINS",
            title="Cross-site request refused",
        )
        await response(scope, receive, send)


def install(app: FastAPI, settings: Settings, registry: CollectorRegistry) -> None:
    """Rate limiters, per-tenant metrics, CORS, the cross-site guard and the host check."""
    storage = rate_limit_storage(settings)
    app.state.rate_limiter = (
        RateLimiter(settings.rate_limit, storage) if settings.rate_limit else None
    )
    # Failed keys are counted in this replica's memory: a shared count would put a Redis
    # call before every request's key check, and with Redis frozen each request then
    # waited its own timeout in turn (16 at once answered over 30 s).
    app.state.auth_failure_limiter = (
        RateLimiter(
            settings.auth_failure_limit,
            memory_storage(),
            namespace="auth-failure",
            setting="CLUSTERBENCH_AUTH_FAILURE_LIMIT",
        )
        if settings.auth_failure_limit
        else None
    )
    # /metrics is open: who the tenants are is told only where the operator asked.
    app.state.tenant_requests = (
        Counter(
            "clusterbench_tenant_requests",
            "Requests to /v1 by tenant (the key's name).",
            ["tenant"],
            registry=registry,
        )
        if settings.metrics_tenants
        else None
    )
    app.add_middleware(RateLimitHeadersMiddleware)
    origins = settings.cors_origins()
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE", "HEAD", "OPTIONS"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "If-None-Match", "Accept"],
            expose_headers=[
                "ETag",
                "X-Cache",
                "Location",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
        )
    app.add_middleware(CrossSiteGuard, allowed_origins=origins)
    app.add_middleware(TrustedHosts, allowed_hosts=settings.host_allow_list())


def optional_security(schema: dict[str, Any]) -> dict[str, Any]:
    """Mark every operation's key as optional (``{}`` among the alternatives): with no
    key configured, the service and Swagger's "Try it out" work without one."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            security = operation.get("security")
            if security is not None and {} not in security:
                security.append({})
    return schema
