"""Fixtures: the app on a temporary data directory, reached through httpx."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from service.main import create_app
from service.process import ServiceProcess
from service.settings import Settings
from tests.helpers import start_server
from tests.scaleout import BACKENDS, Backend, RedisServer, backend_of

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# What the fast tier does not start: servers of their own, and the tools that run them.
SLOW_PROGRAMS = frozenset({"redis-server", "dask", "chromium", "docker", "make", "hadolint"})


@pytest.fixture(scope="session", autouse=True)
def _fast_tier_starts_no_server() -> Iterator[None]:
    """``make test-fast`` (CLUSTERBENCH_TEST_TIER=fast) runs the tests not marked ``server``
    and refuses a server started by any of them (uvicorn through ServiceProcess,
    redis-server, a Dask scheduler or worker, chromium, docker, make): a test that starts
    one without the mark fails here, naming it, instead of slowing the fast tier unseen.
    Short commands (``python -m service --help``, git, loky's look at /proc/cpuinfo) and
    the app's own worker pools stay allowed."""
    if os.environ.get("CLUSTERBENCH_TEST_TIER") != "fast":
        yield
        return
    from tests.daskcluster import DaskCluster

    def refuse(what: str) -> Any:
        def refused(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError(
                f"the fast tier starts no {what}: mark this test @pytest.mark.server "
                "(make test runs it)"
            )

        return refused

    popen = subprocess.Popen.__init__

    def checked_popen(self: subprocess.Popen[Any], args: Any, *rest: Any, **options: Any) -> None:
        program = Path(str(args[0] if isinstance(args, list | tuple) else args).split()[0]).name
        if program in SLOW_PROGRAMS:
            refuse(program)()
        popen(self, args, *rest, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ServiceProcess, "start", refuse("uvicorn server (ServiceProcess)"))
        patch.setattr(RedisServer, "start", refuse("redis-server"))
        patch.setattr(DaskCluster, "start_scheduler", refuse("Dask scheduler"))
        patch.setattr(DaskCluster, "start_worker", refuse("Dask worker"))
        patch.setattr(subprocess.Popen, "__init__", checked_popen)
        yield


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
            transport=httpx.ASGITransport(app=manager.app), base_url="http://localhost", timeout=120
        ) as client,
    ):
        yield client


@pytest.fixture(scope="session")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    """One app for the suite: its compute pool is started once."""
    async with serve(make_settings(tmp_path_factory.mktemp("data"))) as c:
        yield c


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A real server shared by the end-to-end tests."""
    instance = start_server(tmp_path_factory, "server")
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def make_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ServiceProcess]]:
    """Real servers of a module's own settings: ``make_server(name, **options)`` starts one
    as :func:`tests.helpers.start_server` does; each is stopped at the module's end.

    A module whose tests all want other settings overrides ``server`` with one of these.
    """
    started: list[ServiceProcess] = []

    def make(name: str = "server", **options: Any) -> ServiceProcess:
        started.append(start_server(tmp_path_factory, name, **options))
        return started[-1]

    yield make
    for instance in reversed(started):
        instance.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the module's tests (tests/scaleout.py); a test that needs it
    empty flushes it."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as instance:
        yield instance


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each store backend in turn: SQLite in ``tmp_path``, and Redis on ``redis_server``."""
    chosen = backend_of(request, tmp_path)
    yield chosen
    chosen.close()
