"""The Docker image: lint-clean, reproducible, healthy on its port, and it stops gracefully.

Docker itself is not needed: the image's health check and stop signal are exercised on a
real ``python -m service`` process, the command the image runs.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from service.jobs.records import RELEASED, JobStore
from service.process import SERVER_ARGS, ServiceProcess, free_port
from service.settings import Settings
from tests.conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = ROOT / "requirements.lock"


@pytest.mark.server
def test_hadolint_passes() -> None:
    # Check the Dockerfile with hadolint (installed from PyPI with the dev extras).
    hadolint = shutil.which("hadolint", path=sysconfig.get_path("scripts"))
    assert hadolint, "hadolint is a dev dependency: run 'make install'"
    run = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_start_command_is_the_one_tested() -> None:
    # Check that the image runs `python -m service` (as the real-server tests do) on
    # 0.0.0.0:8000, as a non-root user, with a health check on /healthz, from a Python 3.11
    # slim base pinned by digest, stopped by SIGTERM.
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.MULTILINE)
    assert cmd
    assert json.loads(cmd.group(1)) == ["python", *SERVER_ARGS]
    assert "CLUSTERBENCH_HOST=0.0.0.0" in DOCKERFILE
    assert "CLUSTERBENCH_PORT=8000" in DOCKERFILE
    assert re.search(r"^USER (?!root|0\b)\S+", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", DOCKERFILE, re.MULTILINE)
    assert re.search(
        r"^FROM python:3\.11(\.\d+)?-slim-bookworm@sha256:[0-9a-f]{64}$", DOCKERFILE, re.MULTILINE
    )
    assert re.search(r"^STOPSIGNAL SIGTERM$", DOCKERFILE, re.MULTILINE)
    assert "MPLBACKEND=Agg" in DOCKERFILE
    assert "PYTHONUNBUFFERED=1" in DOCKERFILE


def test_dependencies_come_from_the_lock_before_the_code() -> None:
    # Check the layer order and that nothing is resolved at build time: the lock is installed
    # with its hashes and without dependencies, before the code; the project without either.
    lock_install = re.search(r"^RUN pip install .*-r requirements\.lock$", DOCKERFILE, re.MULTILINE)
    assert lock_install
    assert "--require-hashes" in lock_install.group(0)
    assert "--no-deps" in lock_install.group(0)
    project_install = re.search(r"^RUN pip install (.*) \.", DOCKERFILE, re.MULTILINE)
    assert project_install
    assert "--no-deps" in project_install.group(1)
    assert "--no-build-isolation" in project_install.group(1)
    assert lock_install.start() < DOCKERFILE.index("COPY service")
    assert "requirements.lock" not in (ROOT / ".dockerignore").read_text()


def test_the_project_install_leaves_no_build_leftovers_in_the_image() -> None:
    # Check that the RUN installing the project removes, in its own layer, what the build
    # leaves in /app beside the installed package: setuptools' build/ and *.egg-info.
    instructions = DOCKERFILE.replace("\\\n", " ").splitlines()
    run = next(i for i in instructions if re.match(r"RUN pip install .* \.( |$)", i))
    commands = [c.strip() for c in run.split("&&")]
    assert "rm -rf build ./*.egg-info" in commands


def test_readme_says_how_to_run_the_image() -> None:
    # Check that the README tells what the image needs from whoever runs it: a stop timeout
    # longer than the shutdown grace period, and a /data writable by the image's uid.
    readme = (ROOT / "README.md").read_text()
    grace = Settings.model_fields["shutdown_grace_s"].default
    assert f"`CLUSTERBENCH_SHUTDOWN_GRACE_S` | `{grace}` |" in readme
    timeouts = re.findall(r"(?:--stop-timeout |stop -t |stop_grace_period: )(\d+)", readme)
    assert len(timeouts) >= 3
    assert all(int(t) > grace for t in timeouts), timeouts
    user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE, re.MULTILINE)
    assert user
    assert f"uid {user.group(1)}" in readme
    assert f"chown {user.group(1)}:{user.group(2)}" in readme
    assert '--user "$(id -u):$(id -g)"' in readme


def _locked() -> dict[str, Version]:
    """Name -> pinned version of every package in requirements.lock, each with a hash."""
    pins: dict[str, Version] = {}
    for entry in re.split(r"\n(?=\S)", LOCK.read_text()):
        if entry.startswith("#") or not entry.strip():
            continue
        pin = re.match(r"([A-Za-z0-9._-]+)==(\S+)", entry)
        assert pin, f"not an exact pin: {entry.splitlines()[0]!r}"
        assert "--hash=sha256:" in entry, f"{pin.group(1)} has no hash"
        pins[canonicalize_name(pin.group(1))] = Version(pin.group(2))
    return pins


def _wanted(requirement: Requirement, extra: str = "") -> bool:
    # Markers as the image evaluates them: CPython 3.11 on Linux, as this machine.
    environment = {**default_environment(), "extra": extra}
    return requirement.marker is None or requirement.marker.evaluate(environment)


def test_lock_pins_every_dependency_within_pyproject_ranges() -> None:
    # Check that requirements.lock pins, with hashes, every runtime dependency and the
    # build backend named in pyproject.toml, each at a version its range allows, and the
    # dependencies of the extras asked for (uvicorn[standard]) and of every locked package
    # installed here at the locked version, so the image's `--no-deps` misses nothing.
    pins = _locked()
    direct = [
        Requirement(text)
        for text in PYPROJECT["project"]["dependencies"]
        + PYPROJECT["project"]["optional-dependencies"]["onedal"]  # the image's one extra
        + PYPROJECT["build-system"]["requires"]
    ]
    for requirement in direct:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock: run 'make lock'"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside {requirement}: run 'make lock'"
        )

    checked = 0
    queue = [(canonicalize_name(r.name), sorted(r.extras)) for r in direct]
    seen: set[str] = set()
    while queue:
        name, extras = queue.pop()
        if name in seen and not extras:
            continue
        seen.add(name)
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if Version(distribution.version) != pins[name]:
            continue
        checked += 1
        for text in distribution.requires or []:
            requirement = Requirement(text)
            if not any(_wanted(requirement, extra) for extra in ["", *extras]):
                continue
            dependency = canonicalize_name(requirement.name)
            assert dependency in pins, f"{dependency} (for {name}) is not in requirements.lock"
            assert requirement.specifier.contains(pins[dependency], prereleases=True)
            queue.append((dependency, sorted(requirement.extras)))
    assert checked >= len(direct) // 2, "too few locked versions installed here to check"


def _healthcheck() -> list[str]:
    """The image's HEALTHCHECK command, with this interpreter as `python`."""
    found = re.search(r"^HEALTHCHECK .*\\\n\s*CMD (\[.*\])$", DOCKERFILE, re.MULTILINE)
    assert found
    command: list[str] = json.loads(found.group(1))
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


@pytest.mark.server
def test_healthcheck_asks_the_port_the_service_listens_on(server: ServiceProcess) -> None:
    # Check that the HEALTHCHECK follows CLUSTERBENCH_PORT: healthy for a service moved
    # off 8000, unhealthy when nothing answers on the configured port.
    def check(port: int) -> int:
        env = {"PATH": "/usr/bin:/bin", "CLUSTERBENCH_PORT": str(port)}
        return subprocess.run(_healthcheck(), env=env, capture_output=True, timeout=30).returncode

    assert server.port != 8000
    assert check(server.port) == 0
    assert check(free_port()) != 0


SLOW = {"strategies": [{"init": "random", "n_init": 300}], "tol": 0.0, "random_state": 5}
"""About 2.5 s on digits on one idle core: long enough to be caught running."""

SLOWER = {
    "strategies": [{"init": "k-means++", "n_init": 1000}, {"init": "random", "n_init": 1000}],
    "tol": 0.0,
    "random_state": 5,
}
"""About 17 s: far past a short grace period."""


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:g} s"
        time.sleep(0.05)


def _computing(url: str) -> bool:
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    pending = re.search(r"^clusterbench_compute_pending (\S+)$", metrics, re.MULTILINE)
    return pending is not None and float(pending.group(1)) >= 1


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@contextlib.contextmanager
def _computing_server(
    data_dir: Path,
    body: dict[str, object],
    grace_s: int,
    *,
    joining_job: bool = False,
    output: Path | None = None,
) -> Iterator[tuple[ServiceProcess, dict[str, httpx.Response | Exception], threading.Thread]]:
    """A one-worker server with ``body`` being computed in a client thread. With
    ``joining_job``, a job for ``body`` is started first (its 202 in ``answer["job"]``) and
    the client's request joins it."""
    instance = ServiceProcess(
        data_dir,
        CLUSTERBENCH_WORKERS="1",
        CLUSTERBENCH_SHUTDOWN_GRACE_S=str(grace_s),
        output=output,
    )
    data_dir.mkdir()
    instance.start()
    answer: dict[str, httpx.Response | Exception] = {}

    def ask() -> None:
        try:
            answer["r"] = httpx.post(f"{instance.url}/v1/benchmarks", json=body, timeout=300)
        except httpx.HTTPError as exc:
            answer["r"] = exc

    client = threading.Thread(target=ask)
    try:
        if joining_job:
            started = httpx.post(
                f"{instance.url}/v1/benchmarks",
                json=body,
                headers={"Prefer": "respond-async"},
                timeout=60,
            )
            assert started.status_code == 202, started.text
            answer["job"] = started
            _wait_for(lambda: _computing(instance.url), 60, "job computing")
        misses = _misses(instance.url)
        client.start()
        # A miss is counted as the request starts (or joins) the computation.
        _wait_for(
            lambda: _misses(instance.url) > misses and _computing(instance.url),
            60,
            "computation running",
        )
        yield instance, answer, client
    finally:
        instance.stop()
        if client.ident is not None:
            client.join()


def _misses(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(r"^clusterbench_benchmark_cache_misses_total (\S+)$", metrics, re.MULTILINE)
    assert found is not None
    return float(found.group(1))


@pytest.mark.server
def test_sigterm_refuses_new_work_and_lets_running_work_finish(tmp_path: Path) -> None:
    # Check `docker stop` on a busy service: on SIGTERM new connections are refused at
    # once, the request already computing still gets its 200, and the process then exits 0
    # by itself, within the grace period.
    with _computing_server(tmp_path / "data", SLOW, grace_s=60) as (server, answer, client):
        assert server.process
        server.process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        _wait_for(lambda: _refused(server.port), 10, "refusal of new connections")
        assert client.is_alive(), "the request finished too soon to show anything"
        client.join(timeout=60)
        response = answer["r"]
        assert isinstance(response, httpx.Response), response
        assert response.status_code == 200
        assert response.json()["results"][0]["init"] == "random"
        assert server.process.wait(timeout=60) == 0
        assert time.monotonic() - stopped < 60


@pytest.mark.server
def test_sigterm_past_the_grace_period_still_exits(tmp_path: Path) -> None:
    # Check that work running past CLUSTERBENCH_SHUTDOWN_GRACE_S does not hold the process:
    # it is cancelled and the process exits 0 in bounded time, long before the work would
    # have finished.
    with _computing_server(tmp_path / "data", SLOWER, grace_s=1) as (server, answer, client):
        assert server.process
        server.process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert server.process.wait(timeout=20) == 0
        took = time.monotonic() - stopped
        client.join(timeout=30)
        response = answer["r"]
        assert not (isinstance(response, httpx.Response) and response.status_code == 200)
        assert took < 10, f"the process took {took:.1f} s to exit after a 1 s grace period"


@pytest.mark.server
def test_a_request_cut_off_by_the_stop_is_a_503_and_its_job_is_handed_over(
    tmp_path: Path,
) -> None:
    # Check `docker stop` past the grace period on a request that joined a job: the
    # request gets 503 problem+json with Retry-After (not uvicorn's plain-text 500), no
    # traceback is logged, and the job is handed over rather than left "running" under a
    # stopped process: its record is queued again, released for any server to take over.
    data, log = tmp_path / "data", tmp_path / "server.log"
    computing = _computing_server(data, SLOWER, grace_s=1, joining_job=True, output=log)
    with computing as (server, answer, client):
        assert server.process
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
        client.join(timeout=60)
    job = answer["job"]
    assert isinstance(job, httpx.Response)
    response = answer["r"]
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    problem = response.json()
    assert problem["type"].endswith("server-stopping")
    assert "CLUSTERBENCH_SHUTDOWN_GRACE_S" in problem["detail"]
    output = log.read_text()
    assert "Traceback" not in output, output
    jobs = JobStore(data / "jobs.sqlite3")
    try:
        record = jobs.get(job.json()["id"])
    finally:
        jobs.close()
    assert record is not None
    assert (record.state, record.stage, record.owner) == ("queued", RELEASED, RELEASED)
