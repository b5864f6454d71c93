"""Run the service as a child process on a free loopback port, as users run it.

Used by the end-to-end tests and the benchmark suite, which talk to a real uvicorn
process rather than to the app in-process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

# How the service is started; the Dockerfile's CMD runs the same.
SERVER_ARGS = ["-m", "service"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServiceProcess:
    """``python -m service`` (or other ``args``; ``{port}`` is filled in) on a loopback port.

    ``env`` adds ``CLUSTERBENCH_*`` settings to this process's environment. ``launcher``
    is a command the Python process is run through (e.g. ``unshare``); ``output`` a file
    that takes its stdout and stderr (else they are this process's).
    """

    def __init__(
        self,
        data_dir: Path,
        args: list[str] | None = None,
        *,
        launcher: Sequence[str] = (),
        output: Path | None = None,
        **env: str,
    ) -> None:
        self.port = free_port()
        self.args = [a.format(port=self.port) for a in (args or SERVER_ARGS)]
        self.launcher = list(launcher)
        self.output = output
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

    def start(self, timeout_s: float = 60) -> None:
        """Start the process and wait until ``/readyz`` answers 200."""
        with contextlib.ExitStack() as files:
            output = None if self.output is None else files.enter_context(self.output.open("ab"))
            self.process = subprocess.Popen(
                [*self.launcher, sys.executable, *self.args],
                env=self.env,
                cwd=self.data_dir.parent,
                stdout=output,
                stderr=output,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become ready within {timeout_s:g} s")

    def stop(self) -> None:
        """Stop it as Ctrl-C would, killing it if it has not exited after 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServiceProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
