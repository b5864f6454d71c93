"""``python -m service``: serve the API with uvicorn on the configured host and port.

Flags override the ``CLUSTERBENCH_*`` environment, which overrides the defaults; a bad
value from either is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError

from service.cli_keys import keys_main
from service.protocol import bounded_protocol
from service.settings import Settings

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
# Settings whose values an error message never repeats.
SECRET_FIELDS = frozenset(
    name for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)
)

# Subcommands: `python -m service NAME ...` runs COMMANDS[NAME](rest of argv) and exits
# with what it returns; anything else is the server's own command line.
COMMANDS: dict[str, Callable[[list[str]], int]] = {"keys": keys_main}


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve the clusterbench API. Every option can also be set in the "
        "environment as CLUSTERBENCH_<NAME> (e.g. CLUSTERBENCH_PORT=9000); a flag wins "
        "over the environment. The other settings (limits, timeouts) are listed in the "
        "README's configuration table.",
        epilog="API keys: python -m service keys create|list|revoke NAME "
        "(see python -m service keys --help).",
    )
    parser.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", help="TCP port to listen on (default 8000)")
    parser.add_argument("--workers", help="compute processes running scikit-learn")
    parser.add_argument(
        "--data-dir", help="where the store and uploaded datasets live (default .clusterbench)"
    )
    parser.add_argument("--log-level", help=f"one of {', '.join(LOG_LEVELS)} (default info)")
    return parser


def _env_name(field: str) -> str:
    return f"CLUSTERBENCH_{field.upper()}"


def load_settings(flags: dict[str, Any]) -> Settings:
    """Settings from the environment, with ``flags`` (field -> value) on top.

    Raises
    ------
    SystemExit
        Status 2 with one line per bad value, naming the flag or variable it came from.
    """
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False):
            field = str(error["loc"][0]) if error["loc"] else ""
            source = f"--{field.replace('_', '-')}" if field in given else _env_name(field)
            got = "" if field in SECRET_FIELDS else f" (got {error['input']!r})"
            lines.append(f"error: {source}: {error['msg']}{got}")
        raise _usage_error("\n".join(lines)) from None
    if settings.log_level.lower() not in LOG_LEVELS:
        source = "--log-level" if "log_level" in given else _env_name("log_level")
        raise _usage_error(
            f"error: {source}: should be one of {', '.join(LOG_LEVELS)} "
            f"(got {settings.log_level!r})"
        )
    return settings


def _usage_error(message: str) -> SystemExit:
    print(message, file=sys.stderr)
    return SystemExit(2)


def check_listenable(host: str, port: int) -> None:
    """Exit at once (status 2) when ``host:port`` cannot be listened on, naming the
    settings that choose them: uvicorn binds only after the app has started (pools
    warmed up, seconds later), then fails with no word of them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise _usage_error(
                    f"error: port {port} on {host} is in use (another server?): stop what "
                    "holds it, or choose another port with --port N or CLUSTERBENCH_PORT=N"
                ) from None
            raise _usage_error(
                f"error: cannot listen on {host} port {port}: {exc.strerror or exc}; choose "
                "them with --host/CLUSTERBENCH_HOST and --port/CLUSTERBENCH_PORT"
            ) from None


def serve(settings: Settings) -> None:
    """Run the server until it is stopped."""
    from service.main import create_app

    check_listenable(settings.host, settings.port)
    # uvicorn handles SIGTERM itself while it serves (stop accepting, let running requests
    # finish within the grace period, then cancel them), and re-raises it once it has shut
    # down: exit 0 then, so `docker stop` sees a clean stop rather than death by signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        http=bounded_protocol(settings),
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] and args[0] in COMMANDS:
        raise SystemExit(COMMANDS[args[0]](args[1:]))
    options = _parser().parse_args(args)
    settings = load_settings(
        {
            "host": options.host,
            "port": options.port,
            "workers": options.workers,
            "data_dir": None if options.data_dir is None else Path(options.data_dir),
            "log_level": options.log_level,
        }
    )
    serve(settings)


if __name__ == "__main__":
    main()
