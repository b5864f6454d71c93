"""uvicorn's HTTP protocol with the bounds a public server needs: header size and read deadlines.

uvicorn (httptools) accepts headers of any size and waits for ever on a client that
sends half a request. Measured before this module: a 64 MB header was accepted, a 30 MB
``Accept`` held the event loop ~7 s, and 600 half-sent requests were each held open
with a file descriptor and a scratch file. Here:

- the request line and headers are counted as their bytes arrive, before httptools
  buffers them: past ``max_header_bytes`` the client gets 431 and the connection closes;
- a connection has ``header_timeout_s`` to send a request's line and headers, and a
  body may pause at most ``body_timeout_s`` between two parts: past either, 408 and the
  connection closes (the app, if it was reading the body, sees a disconnect).

A pause that the server itself causes (it stopped reading because the app has not
consumed the body yet) never counts against the client.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

PROBLEM_MEDIA_TYPE = b"application/problem+json"


def _problem(status: int, reason: str, detail: str) -> bytes:
    """A complete HTTP/1.1 problem response that closes the connection."""
    body = orjson.dumps(
        {"type": "about:blank", "title": reason, "status": status, "detail": detail, "errors": []}
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"content-type: {PROBLEM_MEDIA_TYPE.decode()}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with bounded headers and read deadlines.

    Use :func:`bounded_protocol` to make one with the service's settings.
    """

    max_header_bytes = 64 * 1024
    header_timeout_s = 15.0
    body_timeout_s = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = True
        self._header_bytes = 0
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None

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

    def _body_too_slow(self) -> None:
        self._timer = None
        cycle = self.cycle
        if self._refused or cycle is None or not cycle.more_body:
            return
        if self.flow.read_paused:
            # The server is not reading (the app has not taken the body yet): not the client's
            # pause. Look again later.
            self._arm(self.body_timeout_s, self._body_too_slow)
            return
        detail = f"the request body paused for more than {self.body_timeout_s:g} s"
        if cycle.response_started:
            self._close()
        else:
            self._refuse(408, "Request Timeout", detail)

    # The refusal: write the problem, tell the app the client is gone, close.
    def _refuse(self, status: int, reason: str, detail: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(_problem(status, reason, detail))
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
        # A connection that never sends a request is closed like a slow one.
        self._arm(self.header_timeout_s, self._headers_too_slow)

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
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.more_body:
            self._arm(self.body_timeout_s, self._body_too_slow)

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        super().on_body(body)
        self._arm(self.body_timeout_s, self._body_too_slow)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        self._disarm()
        self._in_headers = True


def bounded_protocol(
    *, max_header_bytes: int, header_timeout_s: float, body_timeout_s: float
) -> type[BoundedHttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with these bounds."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {
            "max_header_bytes": max_header_bytes,
            "header_timeout_s": header_timeout_s,
            "body_timeout_s": body_timeout_s,
        },
    )
