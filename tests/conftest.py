"""Fixtures: the app on a temporary data directory, reached through httpx."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from service.main import create_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# How the real-server tests start the service; the Dockerfile's CMD must be the same.
SERVER_ARGS = ["-m", "service"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": data_dir, "workers": 2, "queue_size": 32}
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and an httpx client talking to it in-process."""
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://test", timeout=120
        ) as client,
    ):
        yield client


@pytest.fixture(scope="session")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    """One app for the suite: its compute pool is started once."""
    async with serve(make_settings(tmp_path_factory.mktemp("data"))) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """A real ``python -m service`` process on a loopback port."""

    def __init__(self, data_dir: Path, args: list[str] | None = None, **env: str) -> None:
        self.port = free_port()
        self.args = SERVER_ARGS if args is None else args
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "CLUSTERBENCH_PORT": str(self.port),
            "CLUSTERBENCH_DATA_DIR": str(data_dir),
            "CLUSTERBENCH_LOG_LEVEL": "warning",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *self.args], env=self.env, cwd=self.data_dir.parent
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not become ready within 60 s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server shared by the end-to-end tests."""
    instance = Server(tmp_path_factory.mktemp("server") / "data")
    instance.data_dir.mkdir(parents=True)
    instance.start()
    yield instance
    instance.stop()
