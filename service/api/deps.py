"""Shared pieces of the routes: the engine from the lifespan state, ids, conditional requests."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Request

from service.engine import BenchmarkEngine
from service.errors import NotAcceptableError, UnsupportedMediaTypeError, clip
from service.schemas import Problem
from service.tenants import Tenancy

ID_PATTERN = "^[0-9a-f]{64}$"


async def get_engine(request: Request) -> BenchmarkEngine:
    # async: FastAPI would run a plain function in a worker thread, on every request.
    engine: BenchmarkEngine = request.state.engine
    return engine


Engine = Annotated[BenchmarkEngine, Depends(get_engine)]


async def get_tenancy(request: Request) -> Tenancy:
    tenancy: Tenancy = request.state.tenancy
    return tenancy


Tenants = Annotated[Tenancy, Depends(get_tenancy)]
BenchmarkId = Annotated[
    str, Path(pattern=ID_PATTERN, description="The benchmark's id: a sha256 hex digest.")
]


def require_json(request: Request) -> None:
    """A body, when there is one, must be declared as JSON: anything else is 415."""
    has_body = request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if has_body and media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"the body must be application/json, not "
            f"{clip(media_type) if media_type else 'undeclared'}; "
            "send it with 'Content-Type: application/json'"
        )


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries documenting the problem statuses a route can answer."""
    return {status: {"model": Problem} for status in statuses}


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak or strong) or is ``*``."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def negotiate(accept: str | None, offered: tuple[str, ...]) -> str:
    """The offered media type the ``Accept`` header prefers; the first one when absent.

    Raises NotAcceptableError when the header accepts none of them.
    """
    if not accept:
        return offered[0]
    best, best_q = None, 0.0
    for part in accept.split(","):
        media, _, rest = part.strip().partition(";")
        media = media.strip().lower()
        q = 1.0
        for param in rest.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        for index, candidate in enumerate(offered):
            major = candidate.split("/")[0]
            if media in (candidate, f"{major}/*", "*/*") and (
                q > best_q or (q == best_q and best is not None and index < offered.index(best))
            ):
                best, best_q = candidate, q
    if best is None or best_q <= 0:
        raise NotAcceptableError(
            f"cannot answer with {clip(accept)}; this resource is available as {', '.join(offered)}"
        )
    return best
