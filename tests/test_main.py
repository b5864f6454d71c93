"""``python -m service``: its command line, its errors, and the port it really serves on."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from service.process import ServiceProcess
from tests.helpers import run_module


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m service ARGS`` that must exit by itself within seconds."""
    data_dir = str(tmp_path / "data")
    return run_module(
        "service", *args, cwd=tmp_path, timeout=60, **{"CLUSTERBENCH_DATA_DIR": data_dir, **env}
    )


def test_help_prints_usage_and_starts_nothing(tmp_path: Path) -> None:
    # Check that --help prints the options and exits 0 without serving or writing data.
    done = run_cli(tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m service")
    for flag in ("--host", "--port", "--workers", "--data-dir", "--log-level"):
        assert flag in done.stdout
    assert "CLUSTERBENCH_PORT" in done.stdout
    assert "Uvicorn running" not in done.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--port", "abc"], "error: --port: Input should be a valid integer"),
        (["--port", "70000"], "error: --port: Input should be less than or equal to 65535"),
        (["--workers", "0"], "error: --workers: Input should be greater than or equal to 1"),
        (["--log-level", "loud"], "error: --log-level: should be one of critical"),
        (["--colour"], "unrecognized arguments: --colour"),
    ],
)
def test_bad_flag_is_one_line_and_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    # Check that a bad flag is named in a short message, with no traceback, exit status 2.
    done = run_cli(tmp_path, *args)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].count("error:") == 1


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"CLUSTERBENCH_PORT": "abc"},
            "error: CLUSTERBENCH_PORT: Input should be a valid integer, unable to parse "
            "string as an integer (got 'abc')",
        ),
        ({"CLUSTERBENCH_WORKERS": "-1"}, "error: CLUSTERBENCH_WORKERS: Input should be greater"),
        ({"CLUSTERBENCH_LOG_LEVEL": "loud"}, "error: CLUSTERBENCH_LOG_LEVEL: should be one of"),
    ],
)
def test_bad_environment_is_one_line_and_exit_2(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    # Check that a bad CLUSTERBENCH_* value names the variable and the value, no traceback.
    done = run_cli(tmp_path, **env)
    assert done.returncode == 2
    assert done.stderr.strip() == expected or done.stderr.startswith(expected)
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.server
def test_port_flag_is_served_and_wins_over_the_environment(tmp_path: Path) -> None:
    # Check that --port N serves on N, even when CLUSTERBENCH_PORT says something else.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with ServiceProcess(
        data_dir,
        ["-m", "service", "--port", "{port}", "--workers", "1"],
        CLUSTERBENCH_PORT="abc",
    ) as server:
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


def test_a_busy_port_fails_at_once_naming_the_setting(tmp_path: Path) -> None:
    # Check that a port another socket listens on stops the start before anything is
    # started (no data directory written: it failed after the app's start-up, seconds
    # later, with uvicorn's "address already in use" and no word of the setting), in
    # one line naming --port and CLUSTERBENCH_PORT.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        for done in (
            run_cli(tmp_path, "--port", str(port)),
            run_cli(tmp_path, CLUSTERBENCH_PORT=str(port)),
        ):
            assert done.returncode == 2
            assert done.stderr.strip() == (
                f"error: port {port} on 127.0.0.1 is in use (another server?): stop what "
                "holds it, or choose another port with --port N or CLUSTERBENCH_PORT=N"
            )
            assert not (tmp_path / "data").exists()
