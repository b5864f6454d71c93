"""The README's curl examples, run against a real server, answer what the README shows."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.process import ServiceProcess
from service.settings import Settings
from tests.conftest import ROOT

FENCE = re.compile(r"```(sh|text|json)\n(.*?)```", re.DOTALL)
FIT_TIME = re.compile(r"\b\d+\.\d{3}s\b")


def examples(readme: str) -> list[tuple[str, str, str]]:
    """(command, kind, expected output) for each ``sh`` block followed by its output."""
    blocks = FENCE.findall(readme)
    found = []
    for (kind, text), (next_kind, expected) in itertools.pairwise(blocks):
        if kind == "sh":
            assert next_kind in ("text", "json"), f"no output shown after:\n{text}"
            found.append((text, next_kind, expected))
    return found


def matches(actual: Any, expected: Any, where: str = "") -> None:
    """``expected`` is ``actual`` with "..." standing for any value, and floats equal to
    9 significant digits. A dict shows every key the service answers, unless it has a
    ``"...": "..."`` entry (the rest left out on purpose): an example must not hide fields."""
    if expected == "...":
        return
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        shown = {key: value for key, value in expected.items() if key != "..."}
        if "..." not in expected:
            hidden = sorted(set(actual) - set(shown))
            assert not hidden, f"{where}: the example leaves out {hidden}"
        for key, value in shown.items():
            assert key in actual, f"{where}.{key} missing"
            matches(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), where
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            matches(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        # The last bits of a float depend on the machine's BLAS and thread count.
        assert math.isclose(actual, expected, rel_tol=1e-9), f"{where}: {actual!r} != {expected!r}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


README = (ROOT / "README.md").read_text()


# The README's section on keys runs against a server started with these keys.
TENANTS_HEADING = "## Keys and tenants"
README_KEYS = "alice:alice-key-0001-not-a-secret,bob:bob-key-0002-not-a-secret"


def run_examples(found: list[tuple[str, str, str]], server: ServiceProcess, cwd: Path) -> None:
    # As a reader with the project's environment active (the examples use NumPy), in the
    # server's data directory's parent (where `python -m service keys` finds the store).
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "CLUSTERBENCH_DATA_DIR": str(server.data_dir),
    }
    environment.pop("CLUSTERBENCH_API_KEYS", None)
    for command, kind, expected in found:
        script = command.replace("localhost:8000", f"127.0.0.1:{server.port}")
        run = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd,
            check=False,
            env=environment,
        )
        assert run.returncode == 0, f"{command}\n{run.stderr}"
        if kind == "json":
            matches(json.loads(run.stdout), json.loads(expected), command.split("\n")[0])
        else:
            assert FIT_TIME.sub("<t>", run.stdout) == FIT_TIME.sub("<t>", expected), command


def sections() -> tuple[str, str]:
    """The README without its section on keys, and that section."""
    start = README.index(TENANTS_HEADING)
    end = README.index("\n## ", start + 1)
    return README[:start] + README[end:], README[start:end]


@pytest.mark.server
def test_readme_examples(tmp_path: Path) -> None:
    # Check every curl example of the README, in order, on a fresh real server.
    server = ServiceProcess(tmp_path / "data")
    server.data_dir.mkdir()
    server.start()
    try:
        found = examples(sections()[0])
        assert len(found) >= 6
        run_examples(found, server, tmp_path)
    finally:
        server.stop()


@pytest.mark.server
def test_readme_key_examples(tmp_path: Path) -> None:
    # Check the examples of the section on keys on a fresh server started with two keys.
    server = ServiceProcess(tmp_path / "data", CLUSTERBENCH_API_KEYS=README_KEYS)
    server.data_dir.mkdir()
    server.start()
    try:
        found = examples(sections()[1])
        assert len(found) >= 4
        run_examples(found, server, tmp_path)
    finally:
        server.stop()


def test_readme_lists_every_setting() -> None:
    # Check that the settings table names every CLUSTERBENCH_ variable the service reads.
    for name in Settings.model_fields:
        assert f"`CLUSTERBENCH_{name.upper()}`" in README, name


def test_readme_commands_exist() -> None:
    # Check that the two commands the README gives are Makefile targets, and CI runs the test one.
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.MULTILINE)
    assert re.search(r"^test:", makefile, re.MULTILINE)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _make_dry_run(*targets: str) -> str:
    """What ``make -n`` would run for ``targets`` on a checkout with no venv yet."""
    return subprocess.run(
        ["make", "-n", "-B", *targets, "VENV=/nonexistent-venv"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.mark.server
def test_make_run_installs_only_the_runtime_dependencies() -> None:
    # Check that `make run` installs the package without its dev extras (an 818 MB venv
    # of test tools was installed just to serve), and `make test` installs them.
    run = _make_dry_run("run")
    assert "pip install --quiet -e .\n" in run
    assert "[dev]" not in run
    assert "-e '.[dev]'" in _make_dry_run("install")


@pytest.mark.server
def test_make_bench_records_only_when_asked() -> None:
    # Check that `make bench` writes its results where git does not track them, and only
    # `make bench-record` (--record) rewrites the tracked bench/results.*.
    assert "--record" not in _make_dry_run("bench")
    assert "-m bench --record" in _make_dry_run("bench-record")
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".clusterbench/bench/results.md"], cwd=ROOT
    )
    assert ignored.returncode == 0


def test_first_screen_goes_from_clone_to_table_plot_and_docs() -> None:
    # Check that the README's first screen (its first 60 lines) gives `make run`, a curl
    # for the table, a curl for the plot, the /docs address, and how to change the port.
    first_screen = "\n".join(README.splitlines()[:60])
    assert "make run\n" in first_screen
    commands = [command for command, _, _ in examples(first_screen + "\n```")]
    assert any("Accept: text/plain" in command for command in commands)
    assert any("plot_url" in command and "-o plot.png" in command for command in commands)
    assert "http://127.0.0.1:8000/docs" in first_screen
    assert "CLUSTERBENCH_PORT=9000 make run" in first_screen
    assert "--port 9000" in first_screen
    assert "assumes port 8000" in first_screen
