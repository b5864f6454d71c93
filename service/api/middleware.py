"""Pure ASGI middleware: the body size limit, HEAD, request metrics, and the stop."""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import problem_response, service_problem
from service.errors import ServerStoppingError

logger = logging.getLogger(__name__)


class BodySizeLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413, before they are read into memory.

    A declared ``Content-Length`` over the limit is refused before the app runs; a
    streamed body is counted as it arrives and refused once it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self) -> str:
        return f"the request body is larger than the limit of {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    response = problem_response(413, self._detail(), title="Payload too large")
                    await response(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, limited_receive, send)


class HeadMiddleware:
    """Answer HEAD wherever GET answers: the GET's status and headers, without its body.

    FastAPI's routes take only the methods they declare, so HEAD was 405 on every GET
    route. Done here rather than by adding HEAD to the routes, which would put a second
    operation per GET route into the OpenAPI document.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        # A copy: the server reads the original's method to know it must send no body.
        get_scope = {**scope, "method": "GET"}
        done = False

        async def send_headers_only(message: Message) -> None:
            nonlocal done
            if message["type"] == "http.response.start":
                await send(message)
            elif not done and not message.get("more_body", False):
                done = True
                await send({"type": "http.response.body", "body": b""})

        try:
            await self.app(get_scope, receive, send_headers_only)
        finally:
            # The route the router chose, for the metrics around this middleware.
            if "route" in get_scope:
                scope["route"] = get_scope["route"]


class StoppingMiddleware:
    """A request still running when the server's shutdown grace period ends is answered
    503 problem+json with ``Retry-After``, not uvicorn's plain-text 500 and a traceback.

    At the end of ``CLUSTERBENCH_SHUTDOWN_GRACE_S`` after SIGTERM, uvicorn cancels the task
    of each request still running. Nothing else cancels a request's task from outside (a
    client that leaves is told through ``receive``), so a cancellation that reaches this
    layer before the response started is the server stopping. (Event streams end by
    themselves on shutdown: sse-starlette watches for it.)
    """

    def __init__(self, app: ASGIApp, grace_s: float) -> None:
        self.app = app
        self.grace_s = grace_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if started or task is None:
                raise
            task.uncancel()
            logger.warning(
                "%s %s cut off: the server stopped %g s ago (CLUSTERBENCH_SHUTDOWN_GRACE_S)",
                scope["method"],
                scope["path"],
                self.grace_s,
            )
            stopping = ServerStoppingError(
                f"the server is stopping and its grace period of {self.grace_s:g} s "
                "(CLUSTERBENCH_SHUTDOWN_GRACE_S) ended before this request finished; ask "
                "again: another replica, or this one once restarted, answers it (a job "
                "computing it is handed over to them)"
            )
            await service_problem(stopping)(scope, receive, send)


class MetricsMiddleware:
    """Count requests and their latency by route template (never by raw path)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "clusterbench_http_requests",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "clusterbench_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()
        # A mount rewrites root_path in the scope; routes are matched again against this one.
        root_path = scope.get("root_path", "")

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = _route_label(scope, root_path)
            self.requests.labels(scope["method"], route, str(status)).inc()
            self.latency.labels(route).observe(time.perf_counter() - start)


def _route_label(scope: Scope, root_path: str) -> str:
    """The template of the route that took the request: a bounded label, never a raw path.

    FastAPI's own routes leave it in ``scope["route"]``; plain Starlette routes and mounts
    (``/openapi.json``, the static files) don't, so they are matched again here.
    """
    route = scope.get("route")
    if route is None:
        requested = {**scope, "root_path": root_path}
        for candidate in getattr(scope.get("app"), "routes", ()):
            path = getattr(candidate, "path", None)
            if isinstance(path, str) and candidate.matches(requested)[0] is not Match.NONE:
                route = candidate
                break
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "<unmatched>"
