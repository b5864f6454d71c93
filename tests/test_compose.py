"""compose.yaml: the topology of README "Scaling out", run as the scale-out tests run it.

Docker is not needed: the file is checked against the commands and settings the tests
start (tests/scaleout.py for Redis, tests/daskcluster.py for Dask), and the same topology
(Redis, a Dask scheduler, two workers, two API replicas on one data directory) is run on
loopback with those commands.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import httpx
import orjson
import psutil
import pytest
import yaml
from compose_spec import PyCompose

from service.datasets import load_builtin
from service.process import ServiceProcess
from service.settings import Settings
from tests.conftest import ROOT
from tests.daskcluster import (
    DEATH_TIMEOUT_S,
    SCHEDULER_ARGS,
    WORKER_ARGS,
    WORKER_ENV,
    DaskCluster,
)
from tests.reference import assert_matches, seed_scores
from tests.scaleout import REDIS_SERVER_ARGS, RedisServer, require_redis

COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
APIS = ["api-a", "api-b"]
WORKERS = ["dask-worker-1", "dask-worker-2"]
SCHEDULER = "tcp://dask-scheduler:8786"

# The scheduler cannot import this test module: functions run there are sent by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_the_file_follows_the_compose_specification() -> None:
    # Parsed by a Compose Specification implementation (what `docker compose config`
    # checks), after YAML has merged the x- anchors it does not read itself.
    spec = {key: value for key, value in COMPOSE.items() if not key.startswith("x-")}
    parsed = PyCompose.from_json(orjson.dumps(spec).decode())
    assert parsed.service_names() == list(SERVICES)
    wrong = {**spec, "services": {**SERVICES, "redis": {**SERVICES["redis"], "command": {}}}}
    with pytest.raises(ValueError, match="invalid type"):
        PyCompose.from_json(orjson.dumps(wrong).decode())


def test_the_topology_is_two_replicas_redis_a_scheduler_and_two_workers() -> None:
    assert set(SERVICES) == {*APIS, "redis", "dask-scheduler", *WORKERS}
    for name in APIS:
        api = SERVICES[name]
        assert "command" not in api, "the API runs the image's own command, python -m service"
        env = api["environment"]
        assert env["CLUSTERBENCH_REDIS_URL"] == "redis://redis:6379/0"
        assert env["CLUSTERBENCH_DASK_SCHEDULER"] == SCHEDULER
        assert env == SERVICES[APIS[0]]["environment"], "the replicas are alike"
        assert set(api["depends_on"]) == {"redis", "dask-scheduler"}
    published = [SERVICES[name]["ports"][0].split(":")[-2] for name in APIS]
    assert len(set(published)) == len(APIS), "each replica on its own host port"


def test_replicas_are_published_on_loopback_only() -> None:
    # With no key configured the service is open to whoever reaches it: compose publishes
    # it on this host's loopback, and the README says how to expose it with keys.
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    readme = (ROOT / "README.md").read_text()
    assert "127.0.0.1:8001:8000" in readme
    assert "python -m service keys create" in readme


def test_the_image_is_built_once_and_run_by_every_service_of_the_project() -> None:
    # `up --build` builds each service that has `build`: one does, the others run its image.
    builders = [name for name, service in SERVICES.items() if "build" in service]
    assert builders == ["api-a"]
    image = SERVICES["api-a"]["image"]
    assert SERVICES["api-a"]["build"] == "."
    ours = {*APIS, "dask-scheduler", *WORKERS}
    assert {name for name, s in SERVICES.items() if s.get("image") == image} == ours


def _mounted_at(volume: str | dict[str, Any]) -> str:
    return volume["target"] if isinstance(volume, dict) else volume.split(":")[1]


def test_no_service_leaves_an_anonymous_volume_behind() -> None:
    # Each path the image declares a VOLUME gets a named volume or a tmpfs in every service
    # running the image; left unmounted, Docker makes an anonymous volume `down` keeps.
    declared = re.findall(r"^VOLUME (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    paths = {path for found in declared for path in orjson.loads(found)}
    assert paths == {"/data"}
    image = SERVICES["api-a"]["image"]
    for name, service in SERVICES.items():
        if service.get("image") == image:
            mounted = {_mounted_at(volume) for volume in service.get("volumes", [])}
            assert paths <= mounted, f"{name}: nothing mounted at {paths - mounted}"
            for volume in service["volumes"]:
                if isinstance(volume, dict):
                    assert volume["type"] == "tmpfs", name
                else:
                    assert volume.split(":")[0] in COMPOSE["volumes"], name


def test_api_and_workers_share_one_data_volume_at_one_path() -> None:
    # Workers memory-map datasets by the path the API writes them at: same volume, same path.
    for name in [*APIS, *WORKERS]:
        service = SERVICES[name]
        assert service["volumes"] == ["data:/data"], name
        assert service["environment"]["CLUSTERBENCH_DATA_DIR"] == "/data", name
    assert "data" in COMPOSE["volumes"]


def test_every_setting_it_sets_is_one_the_service_has() -> None:
    fields = {f"CLUSTERBENCH_{name.upper()}" for name in Settings.model_fields}
    worker_side = {"CLUSTERBENCH_DASK_TASK_THREADS"}  # read by service.daskworker
    for name, service in SERVICES.items():
        for key in service.get("environment", {}):
            if key.startswith("CLUSTERBENCH_"):
                assert key in fields | worker_side, f"{name}: {key} is not a setting"


def test_redis_runs_with_the_settings_the_tests_use() -> None:
    redis = SERVICES["redis"]
    assert redis["image"].startswith("redis:7")
    assert redis["command"] == ["redis-server", *REDIS_SERVER_ARGS]
    # noeviction: the service bounds its cache itself; an evicted job or lease is lost state.
    assert "noeviction" in redis["command"]
    assert redis["volumes"] == ["redis:/data"], "the append-only file outlives the container"


def test_dask_runs_with_the_commands_the_tests_start() -> None:
    scheduler = SERVICES["dask-scheduler"]["command"]
    assert scheduler == [
        "dask",
        *(a.format(host="dask-scheduler", port="8786") for a in SCHEDULER_ARGS),
    ]
    for name in WORKERS:
        worker = SERVICES[name]
        assert worker["command"] == [
            "dask",
            *(a.format(scheduler=SCHEDULER, host=name) for a in WORKER_ARGS),
        ]
        environment = worker["environment"]
        assert {k: environment[k] for k in WORKER_ENV} == WORKER_ENV
        assert worker["restart"] == "unless-stopped", "workers exit when their scheduler goes"


def test_replicas_stop_after_their_grace_period() -> None:
    # `docker stop` must wait longer than the image's CLUSTERBENCH_SHUTDOWN_GRACE_S (30 s).
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "CLUSTERBENCH_SHUTDOWN_GRACE_S=30" in dockerfile
    readme = (ROOT / "README.md").read_text()
    for name in APIS:
        grace = SERVICES[name]["stop_grace_period"]
        assert int(grace.removesuffix("s")) > 30
        assert f"`stop_grace_period: {grace}` in Compose" in readme, "README says the same"


# -- the topology, run ----------------------------------------------------------------


class Topology:
    def __init__(self, redis: RedisServer, dask: DaskCluster, a: ServiceProcess, b: ServiceProcess):
        self.redis, self.dask, self.a, self.b = redis, dask, a, b


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    require_redis()
    root = tmp_path_factory.mktemp("compose")
    data = root / "data"
    data.mkdir()

    def api(redis: RedisServer, dask: DaskCluster) -> ServiceProcess:
        # compose.yaml's API environment, with loopback addresses.
        environment = dict(SERVICES["api-a"]["environment"])
        del environment["CLUSTERBENCH_DATA_DIR"]  # ServiceProcess sets it
        environment.update(
            CLUSTERBENCH_REDIS_URL=redis.url, CLUSTERBENCH_DASK_SCHEDULER=dask.address
        )
        return ServiceProcess(data, **environment)

    with (
        RedisServer(root / "redis") as redis,
        DaskCluster(workers=2, logs=root / "dask") as dask,
        api(redis, dask) as a,
        api(redis, dask) as b,
    ):
        yield Topology(redis, dask, a, b)


def poll_job(url: str, deadline_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while True:
        job = httpx.get(url, timeout=10).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job still {job['state']}"
        time.sleep(0.1)


@pytest.mark.server
def test_a_job_on_one_replica_runs_on_the_workers_and_is_a_hit_on_the_other(
    topology: Topology,
) -> None:
    a, b, dask = topology.a, topology.b, topology.dask
    before = dask.steps_done("run_strategy_from_files")
    body = {"dataset": "digits", "strategies": ["k-means++", "random", "pca"]}
    started = httpx.post(
        f"{a.url}/v1/benchmarks", json=body, headers={"Prefer": "respond-async"}, timeout=30
    )
    assert started.status_code == 202, started.text
    job = poll_job(a.url + started.headers["location"])
    assert job["state"] == "succeeded", job
    assert dask.steps_done("run_strategy_from_files") == before + 3
    # B reports A's job (jobs live in Redis) and answers the result as a hit.
    assert httpx.get(b.url + started.headers["location"]).json()["state"] == "succeeded"
    on_a = httpx.get(a.url + job["result_url"], timeout=30)
    on_b = httpx.post(f"{b.url}/v1/benchmarks", json=body, timeout=30)
    assert on_b.status_code == 200
    assert on_b.headers["x-cache"] == "hit"
    assert on_b.json()["results"] == on_a.json()["results"]
    X, y = load_builtin("digits")
    for result in on_b.json()["results"]:
        assert_matches(result, seed_scores(X, y, result["init"], n_clusters=10))
    plot = httpx.get(b.url + on_b.json()["plot_url"], timeout=60)
    assert plot.headers["content-type"] == "image/png"
    assert plot.content == httpx.get(a.url + on_b.json()["plot_url"], timeout=60).content


@pytest.mark.server
def test_a_sweep_runs_one_task_per_k_on_the_workers(topology: Topology) -> None:
    dask = topology.dask
    before = dask.steps_done("run_step_from_files")
    body = {"dataset": "iris", "k": [2, 3, 4, 5]}
    started = httpx.post(
        f"{topology.b.url}/v1/sweeps", json=body, headers={"Prefer": "respond-async"}, timeout=30
    )
    assert started.status_code == 202, started.text
    job = poll_job(topology.b.url + started.headers["location"])
    assert job["state"] == "succeeded", job
    assert dask.steps_done("run_step_from_files") == before + 4
    sweep = httpx.get(topology.a.url + job["result_url"], timeout=30)
    assert sweep.status_code == 200
    assert sweep.json()["recommended_k"]["silhouette"] in (2, 3, 4, 5)


def compose_worker(dask: DaskCluster, name: str, data: Path) -> subprocess.Popen[bytes]:
    """compose.yaml's worker ``name``: its command and environment, on loopback."""
    service = SERVICES[name]
    command = [
        dask.address if arg == SCHEDULER else dask.host if arg == name else arg
        for arg in service["command"]
    ]
    assert command[0] == "dask"
    environment = {**service["environment"], "CLUSTERBENCH_DATA_DIR": str(data)}
    return dask.start_worker(command[1:], environment, name)


def family(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The process and all its descendants (nanny, worker, the task's child processes)."""
    root = psutil.Process(process.pid)
    return [root, *root.children(recursive=True)]


def still_running(processes: list[psutil.Process], deadline_s: float = 30) -> list[int]:
    """The pids among ``processes`` still running once they all stopped, or the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        running = []
        for process in processes:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    running.append(process.pid)
            except psutil.NoSuchProcess:
                pass
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(0.1)


@pytest.mark.server
def test_workers_exit_with_their_scheduler_and_a_restart_serves_again(tmp_path: Path) -> None:
    # The supervisor's view of `docker compose restart dask-scheduler` (or its crash): only
    # the scheduler goes; a worker run with compose.yaml's command and environment exits by
    # itself within its --death-timeout, its task processes with it, so `restart:
    # unless-stopped` starts it again; then the API replica, untouched, computes again.
    # And SIGTERM (`docker compose stop`) stops a worker without its nanny killing it.
    data = tmp_path / "data"
    data.mkdir()
    name = WORKERS[0]
    dask = DaskCluster(workers=1, logs=tmp_path / "dask")
    try:
        dask.start_scheduler()
        worker = compose_worker(dask, name, data)
        dask.wait_for_workers(1)
        with (
            ServiceProcess(
                data,
                CLUSTERBENCH_DASK_SCHEDULER=dask.address,
                CLUSTERBENCH_DASK_CONNECT_TIMEOUT_S="2",
            ) as api,
            httpx.Client(base_url=api.url, timeout=60) as client,
        ):
            body = {"strategies": ["pca"], "random_state": 33}
            assert client.post("/v1/benchmarks", json=body).status_code == 200
            processes = family(worker)
            dask.stop_scheduler()  # and waits DEATH_TIMEOUT_S for the worker to exit
            assert still_running(processes) == []

            dask.start_scheduler()
            worker = compose_worker(dask, name, data)
            dask.wait_for_workers(1)
            body["random_state"] = 34
            deadline = time.monotonic() + 60
            while (answer := client.post("/v1/benchmarks", json=body)).status_code != 200:
                assert answer.status_code == 503, answer.text
                assert time.monotonic() < deadline, answer.text
                time.sleep(0.2)
            assert api.process is not None
            assert api.process.poll() is None, "the replica was not restarted"

            processes = family(worker)
            log = tmp_path / "dask" / f"{name}.log"
            seen = log.stat().st_size
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=DEATH_TIMEOUT_S) == 0
            stopping = log.read_bytes()[seen:].decode()
            assert "Run preload teardown: service.daskworker" in stopping
            assert "still alive after" not in stopping, stopping
            assert still_running(processes) == []
    finally:
        dask.stop()
