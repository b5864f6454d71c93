"""The Dockerfile: lint-clean, and it starts the service the way the tests do."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sysconfig

from service.process import SERVER_ARGS
from tests.conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


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
    # 0.0.0.0:8000, as a non-root user, with a health check on /healthz.
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.MULTILINE)
    assert cmd
    assert json.loads(cmd.group(1)) == ["python", *SERVER_ARGS]
    assert "CLUSTERBENCH_HOST=0.0.0.0" in DOCKERFILE
    assert "CLUSTERBENCH_PORT=8000" in DOCKERFILE
    assert re.search(r"^USER (?!root|0\b)\S+", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^FROM python:3\.11-slim", DOCKERFILE, re.MULTILINE)
    assert "MPLBACKEND=Agg" in DOCKERFILE
    assert "PYTHONUNBUFFERED=1" in DOCKERFILE


def test_dependencies_come_before_the_code() -> None:
    # Check the layer order: dependencies installed before the package's code is copied.
    assert DOCKERFILE.index("-r requirements.txt") < DOCKERFILE.index("COPY service")
