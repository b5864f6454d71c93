"""``python -m service``: serve the API with uvicorn on the configured host and port."""

from __future__ import annotations

import uvicorn

from service.settings import Settings


def main() -> None:
    settings = Settings()
    uvicorn.run(
        "service.main:app",
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
