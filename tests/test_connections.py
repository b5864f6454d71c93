"""Connections a hostile client can hold: a body trickled under the pause limit is cut at a
minimum rate, one address holds a bounded share of the server's connections, and the
probes answer while the server is full (against a real uvicorn process, raw sockets)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

import httpx
import pytest

from service.process import ServiceProcess
from service.protocol import HEALTH_HEADROOM
from tests.helpers import read_all, status_and_body

pytestmark = pytest.mark.server

BODY_TIMEOUT_S = 2.0
BODY_MIN_RATE = 50  # bytes/s
MAX_CONNECTIONS = 20
MAX_CLIENT_CONNECTIONS = 8


@pytest.fixture(scope="module")
def guarded_server(make_server: Callable[..., ServiceProcess]) -> ServiceProcess:
    """A real server with a small connection limit and a short body deadline; idle
    connections are held for a minute, so that the test decides when they go."""
    return make_server(
        "connections",
        CLUSTERBENCH_HEADER_TIMEOUT_S="60",
        CLUSTERBENCH_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
        CLUSTERBENCH_BODY_MIN_RATE=str(BODY_MIN_RATE),
        CLUSTERBENCH_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        CLUSTERBENCH_MAX_CLIENT_CONNECTIONS=str(MAX_CLIENT_CONNECTIONS),
        CLUSTERBENCH_WORKERS="1",
    )


def _connect_from(server: ServiceProcess, address: str) -> socket.socket:
    """A connection from ``address`` (any of 127.0.0.0/8 is this machine): another client."""
    sock = socket.create_connection(
        ("127.0.0.1", server.port), timeout=15, source_address=(address, 0)
    )
    sock.settimeout(15)
    return sock


def _get_from(server: ServiceProcess, address: str, path: str) -> int:
    with _connect_from(server, address) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        answer = read_all(sock)
    return int(answer.split(b" ", 2)[1])


def _trickle_until_closed(sock: socket.socket, head: bytes) -> bytes:
    """Send ``head``, then one body byte every 0.2 s (well under the pause limit) until
    the server answers and closes; what it answered."""
    sock.sendall(head)
    sock.settimeout(0.2)
    received = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b"1")
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    else:
        raise AssertionError("the server kept a trickling body for a minute")
    return received


def test_a_trickled_body_is_cut_at_the_minimum_rate(guarded_server: ServiceProcess) -> None:
    # Check that a body arriving one byte at a time, never pausing as long as
    # CLUSTERBENCH_BODY_TIMEOUT_S, gets 408 once it falls behind CLUSTERBENCH_BODY_MIN_RATE,
    # and that the upload's scratch file goes with it.
    head = (
        b"POST /v1/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\n"
        b"Content-Length: 100000\r\n\r\na,b\n"
    )
    with _connect_from(guarded_server, "127.0.0.1") as sock:
        status, problem = status_and_body(_trickle_until_closed(sock, head))
    assert status == 408
    assert f"slower than {BODY_MIN_RATE} bytes/s" in str(problem["detail"])
    scratch = guarded_server.data_dir / "tmp"
    deadline = time.monotonic() + 10
    while any(scratch.glob("upload-*")):
        assert time.monotonic() < deadline, list(scratch.iterdir())
        time.sleep(0.05)


def test_one_address_holds_a_bounded_share_and_probes_always_answer(
    guarded_server: ServiceProcess,
) -> None:
    # Check that one address may hold CLUSTERBENCH_MAX_CLIENT_CONNECTIONS connections
    # (429 past it), that with CLUSTERBENCH_MAX_CONNECTIONS held the API answers 503
    # while /healthz and /readyz still answer 200, and that connections past the
    # probes' headroom are refused at once.
    held: list[socket.socket] = []
    try:
        held += [_connect_from(guarded_server, "127.0.0.2") for _ in range(MAX_CLIENT_CONNECTIONS)]
        with _connect_from(guarded_server, "127.0.0.2") as extra:
            status, problem = status_and_body(read_all(extra))
        assert status == 429
        assert "CLUSTERBENCH_MAX_CLIENT_CONNECTIONS" in str(problem["detail"])
        assert _get_from(guarded_server, "127.0.0.3", "/healthz") == 200

        # Fill the server from other addresses, each under its own cap.
        while len(held) < MAX_CONNECTIONS:
            address = f"127.0.1.{len(held) // MAX_CLIENT_CONNECTIONS}"
            held.append(_connect_from(guarded_server, address))
        assert _get_from(guarded_server, "127.0.2.1", "/v1/datasets") == 503
        assert _get_from(guarded_server, "127.0.2.2", "/healthz") == 200
        assert _get_from(guarded_server, "127.0.2.3", "/readyz") == 200

        while len(held) < MAX_CONNECTIONS + HEALTH_HEADROOM:
            address = f"127.0.3.{len(held) // MAX_CLIENT_CONNECTIONS}"
            held.append(_connect_from(guarded_server, address))
        with _connect_from(guarded_server, "127.0.4.1") as extra:
            status, problem = status_and_body(read_all(extra))
        assert status == 503
        assert "CLUSTERBENCH_MAX_CONNECTIONS" in str(problem["detail"])
    finally:
        for sock in held:
            sock.close()
    # Once they are gone, the server serves again.
    deadline = time.monotonic() + 30
    while httpx.get(f"{guarded_server.url}/v1/datasets").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_client_leaving_mid_body_is_one_line_not_a_traceback(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Check that a client that sends part of a body and leaves is logged as one line,
    # not as "Exception in ASGI application" with Starlette's ClientDisconnect traceback
    # (a flood of clients giving up logged one traceback per connection).
    data_dir = tmp_path_factory.mktemp("client-gone") / "data"
    data_dir.mkdir()
    log = data_dir.parent / "server.log"
    with ServiceProcess(data_dir, CLUSTERBENCH_WORKERS="1", output=log) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
            head = (
                "POST /v1/benchmarks HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            )
            sock.sendall(head.encode() + b'{"dataset": "digits", "X": [[1, 2], [3, ')
        deadline = time.monotonic() + 60
        logged = ("left before its body was read", "Exception in ASGI application")
        while not any(line in log.read_text() for line in logged):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    output = log.read_text()
    assert "Traceback" not in output, output
    assert "Exception in ASGI application" not in output, output
