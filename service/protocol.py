"""uvicorn's HTTP protocol with the bounds a public server needs: header size, read deadlines
and connections.

uvicorn (httptools) accepts headers of any size and waits for ever on a client that
sends half a request. Measured before this module: a 64 MB header was accepted, a 30 MB
``Accept`` held the event loop ~7 s, and 600 half-sent requests were each held open
with a file descriptor and a scratch file. Here:

- the request line and headers are counted as their bytes arrive, before httptools
  buffers them: past ``max_header_bytes`` the client gets 431 and the connection closes;
- a connection has ``header_timeout_s`` to send a request's line and headers, and a
  body may pause at most ``body_timeout_s`` between two parts: past either, 408 and the
  connection closes (the app, if it was reading the body, sees a disconnect);
- a body must also keep up ``body_min_rate`` bytes/s on average once its first
  ``body_timeout_s`` have passed (Apache's ``RequestReadTimeout body=..,MinRate=..``): one
  byte every few seconds, never pausing long enough for the first bound, held a
  connection and a scratch file for as long as the client liked;
- one client address may hold ``max_client_connections`` connections (429 past it), and
  the server ``max_connections`` requests (503 past it) plus ``HEALTH_HEADROOM`` kept for
  ``/healthz`` and ``/readyz``; connections past both are closed at once, before they
  hold a file descriptor for the header deadline. Measured before: 1,010 trickling
  connections made every route, ``/healthz`` included, answer 503.

Time that the server itself causes (it stopped reading because the app has not
consumed the body yet) never counts against the client.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.schemas import Problem
from service.settings import Settings

PROBLEM_MEDIA_TYPE = b"application/problem+json"

# Connections past CLUSTERBENCH_MAX_CONNECTIONS kept for the probes, so that an
# orchestrator still sees a live, ready process while clients fill the server.
HEALTH_HEADROOM = 16
HEALTH_PATHS = (b"/healthz", b"/readyz")


def _problem(status: int, reason: str, detail: str, *, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 problem response that closes the connection."""
    problem = Problem(type="about:blank", title=reason, status=status, detail=detail)
    body = problem.model_dump_json().encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"content-type: {PROBLEM_MEDIA_TYPE.decode()}\r\n"
        f"content-length: {len(body)}\r\n"
        + (f"retry-after: {retry_after}\r\n" if retry_after is not None else "")
        + "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _TimedFlowControl(FlowControl):
    """uvicorn's flow control, counting the time the server kept reading paused."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__(transport)
        self._paused_at: float | None = None
        self._paused_s = 0.0

    def pause_reading(self) -> None:
        if not self.read_paused:
            self._paused_at = time.monotonic()
        super().pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self._paused_at is not None:
            self._paused_s += time.monotonic() - self._paused_at
            self._paused_at = None
        super().resume_reading()

    def paused_s(self) -> float:
        """Seconds reading was paused by the server, so far."""
        now = time.monotonic()
        return self._paused_s + (now - self._paused_at if self._paused_at is not None else 0.0)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with bounded headers and read deadlines.

    Use :func:`bounded_protocol` to make one with the service's settings.
    """

    max_header_bytes = 64 * 1024
    header_timeout_s = 15.0
    body_timeout_s = 30.0
    body_min_rate = 1024
    max_connections: int | None = None
    max_client_connections: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = True
        self._header_bytes = 0
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None
        # The body being read: when it started, the server's pauses then, its bytes so far.
        self._body_started = 0.0
        self._body_paused_s = 0.0
        self._body_bytes = 0
        self._last_body = 0.0
        if self.max_connections is None:  # plain `uvicorn --http`: its own --limit-concurrency
            self.max_connections = self.limit_concurrency

    # Deadlines
    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_too_slow(self) -> None:
        self._timer = None
        if self._in_headers and not self._refused:
            self._refuse(
                408,
                "Request Timeout",
                f"the request line and headers did not arrive within {self.header_timeout_s:g} s",
            )

    def _client_body_s(self) -> float:
        """Seconds the client has had to send the body so far (the server's pauses left out)."""
        assert isinstance(self.flow, _TimedFlowControl)
        paused = self.flow.paused_s() - self._body_paused_s
        return time.monotonic() - self._body_started - paused

    def _body_due_s(self) -> float:
        """Seconds the client may take for the bytes it sent: the first ``body_timeout_s``
        free, then one second per ``body_min_rate`` bytes."""
        return self.body_timeout_s + self._body_bytes / self.body_min_rate

    def _arm_body(self) -> None:
        pause_left = self._last_body + self.body_timeout_s - time.monotonic()
        rate_left = self._body_due_s() - self._client_body_s()
        self._arm(max(0.0, min(pause_left, rate_left)), self._body_too_slow)

    def _body_too_slow(self) -> None:
        self._timer = None
        cycle = self.cycle
        if self._refused or cycle is None or not cycle.more_body:
            return
        if self.flow.read_paused:
            # The server is not reading (the app has not taken the body yet): not the client's
            # pause. Look again later.
            self._last_body = time.monotonic()
            self._arm(self.body_timeout_s, self._body_too_slow)
            return
        now = time.monotonic()
        if now - self._last_body >= self.body_timeout_s:
            detail = f"the request body paused for more than {self.body_timeout_s:g} s"
        elif self._client_body_s() >= self._body_due_s():
            detail = (
                f"the request body arrived slower than {self.body_min_rate} bytes/s "
                f"after its first {self.body_timeout_s:g} s ({self._body_bytes} bytes in "
                f"{self._client_body_s():.0f} s)"
            )
        else:
            self._arm_body()
            return
        if cycle.response_started:
            self._close()
        else:
            self._refuse(408, "Request Timeout", detail)

    # The refusal: write the problem, tell the app the client is gone, close.
    def _refuse(
        self, status: int, reason: str, detail: str, *, retry_after: int | None = None
    ) -> None:
        if not self.transport.is_closing():
            self.transport.write(_problem(status, reason, detail, retry_after=retry_after))
        self._close()

    def _close(self) -> None:
        self._refused = True
        self._disarm()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _TimedFlowControl(transport)
        if self._over_connection_bounds():
            return
        # A connection that never sends a request is closed like a slow one.
        self._arm(self.header_timeout_s, self._headers_too_slow)

    def _over_connection_bounds(self) -> bool:
        """Refuse this new connection if it is one too many for its address or the
        server (the probes' headroom included); whether it was refused."""
        if self.max_connections is not None and (
            len(self.connections) > self.max_connections + HEALTH_HEADROOM
        ):
            self._refuse(
                503,
                "Service Unavailable",
                f"the server holds {self.max_connections} connections, its limit "
                "(CLUSTERBENCH_MAX_CONNECTIONS); retry shortly",
                retry_after=1,
            )
            return True
        if self.max_client_connections is not None and self.client is not None:
            host = self.client[0]
            held = sum(
                1
                for other in self.connections
                if isinstance(other, HttpToolsProtocol)
                and other.client is not None
                and other.client[0] == host
            )
            if held > self.max_client_connections:
                self._refuse(
                    429,
                    "Too Many Requests",
                    f"this address holds {self.max_client_connections} connections, the "
                    "limit per client (CLUSTERBENCH_MAX_CLIENT_CONNECTIONS); close one first",
                    retry_after=1,
                )
                return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_headers:
            # Counted before httptools buffers it: a header must not grow without bound
            # inside the parser before a callback could see it.
            self._header_bytes += len(data)
        super().data_received(data)
        if self._in_headers and self._header_bytes > self.max_header_bytes and not self._refused:
            self._refuse(
                431,
                "Request Header Fields Too Large",
                f"the request line and headers are larger than {self.max_header_bytes} bytes",
            )

    def send_400_response(self, msg: str) -> None:
        if not self._refused:
            super().send_400_response(msg)

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        if self._timer is None:
            self._arm(self.header_timeout_s, self._headers_too_slow)

    def on_url(self, url: bytes) -> None:
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.max_header_bytes:
            self._refuse(
                431,
                "Request Header Fields Too Large",
                f"the request line and headers are larger than {self.max_header_bytes} bytes",
            )
            return
        self._in_headers = False
        self._header_bytes = 0
        self._disarm()
        # uvicorn answers 503 past its limit_concurrency; the probes may use the headroom.
        probe = self.url.split(b"?", 1)[0] in HEALTH_PATHS
        self.limit_concurrency = None if probe else self.max_connections
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.more_body:
            self._body_started = self._last_body = time.monotonic()
            assert isinstance(self.flow, _TimedFlowControl)
            self._body_paused_s = self.flow.paused_s()
            self._body_bytes = 0
            self._arm_body()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        super().on_body(body)
        self._body_bytes += len(body)
        self._last_body = time.monotonic()
        self._arm_body()

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        self._disarm()
        self._in_headers = True


# The bounds a protocol class takes from the settings of the same names.
BOUNDS = (
    "max_header_bytes",
    "header_timeout_s",
    "body_timeout_s",
    "body_min_rate",
    "max_connections",
    "max_client_connections",
)


def bounded_protocol(settings: Settings) -> type[BoundedHttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with the ``settings``' bounds.

    Give uvicorn no ``limit_concurrency`` of its own: the class applies ``max_connections``
    itself, with the probes' headroom past it.
    """
    bounds = {name: getattr(settings, name) for name in BOUNDS}
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), bounds)
