"""A stored answer as the API responds it: JSON or, as ``text/plain``, its table, with its
ETag (the answer's id), ``X-Cache`` and ``Vary: Accept``; one way for every kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.responses import Response

from service.api.deps import negotiate
from service.api.routes.jobs import held_result
from service.engine import BenchmarkEngine
from service.errors import ServiceError
from service.schemas.common import hit_form
from service.tenants import Tenancy

REPRESENTATIONS = ("application/json", "text/plain")
# A stored answer never changes under its id.
IMMUTABLE = "public, max-age=31536000, immutable"


def respond_answer(
    result_id: str,
    body: bytes,
    cached: bool,
    *,
    accept: str | None,
    table: Callable[[], str],
    extra: dict[str, str] | None = None,
) -> Response:
    """``body`` (JSON), or ``table()`` when the client accepts ``text/plain`` first."""
    media_type = negotiate(accept, REPRESENTATIONS)
    headers = {
        "ETag": f'"{result_id}"',
        "X-Cache": "hit" if cached else "miss",
        "Vary": "Accept",
        **(extra or {}),
    }
    if media_type == "text/plain":
        return Response(table(), headers=headers, media_type=media_type)
    return Response(body, headers=headers, media_type=media_type)


def respond_document(
    result_id: str,
    body: bytes,
    cached: bool,
    *,
    accept: str | None,
    table: Callable[[dict[str, Any]], str],
    extra: dict[str, str] | None = None,
) -> Response:
    """A sweep's or a stability run's answer: as first answered, or on a hit as stored."""
    if cached:
        body = hit_form(result_id, body)
    return respond_answer(
        result_id,
        body,
        cached,
        accept=accept,
        table=lambda: table(orjson.loads(body)),
        extra=extra,
    )


async def held_document(
    engine: BenchmarkEngine,
    tenants: Tenancy,
    caller: str | None,
    kind: str,
    result_id: str,
    missing: Callable[[str], ServiceError],
) -> bytes:
    """The stored sweep or stability run the caller holds, else ``missing(result_id)``
    (a 404 that names the kind)."""
    body = await held_result(engine, tenants, caller, kind, result_id)
    if body is None:
        raise missing(result_id)
    return body
