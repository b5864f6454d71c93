"""``python -m service``: serve the API with uvicorn on the configured host and port."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import uvicorn

from service.cli_keys import keys_main
from service.protocol import bounded_protocol
from service.settings import Settings


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    if sys.argv[1:2] == ["keys"]:
        raise SystemExit(keys_main(sys.argv[2:]))
    settings = Settings()
    # uvicorn handles SIGTERM itself while it serves (stop accepting, let running requests
    # finish within the grace period, then cancel them), and re-raises it once it has shut
    # down: exit 0 then, so `docker stop` sees a clean stop rather than death by signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "service.main:app",
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        http=bounded_protocol(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
        ),
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )


if __name__ == "__main__":
    main()
