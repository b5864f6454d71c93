"""Shared pieces of the routes: the engine from the lifespan state, ids, conditional requests,
page cursors."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from anyio import to_thread
from fastapi import Depends, Path, Request
from starlette.responses import Response

from service.engine import BenchmarkEngine
from service.errors import (
    AuthenticationRequiredError,
    BenchmarkNotFoundError,
    ComputeBusyError,
    ComputeTimeoutError,
    DatasetConflictError,
    DatasetNotFoundError,
    InvalidRequestError,
    MalformedRequestError,
    NotAcceptableError,
    PayloadTooLargeError,
    QuotaExceededError,
    RateLimitedError,
    ServiceError,
    StorageFullError,
    UnsupportedMediaTypeError,
    clip,
)
from service.questions import Question
from service.report import RESPONSE_HEADERS
from service.schemas import Problem
from service.tenants import Tenancy

ID_PATTERN = "^[0-9a-f]{64}$"

T = TypeVar("T")


async def get_engine(request: Request) -> BenchmarkEngine:
    # async: FastAPI would run a plain function in a worker thread, on every request.
    engine: BenchmarkEngine = request.state.engine
    return engine


Engine = Annotated[BenchmarkEngine, Depends(get_engine)]


async def get_tenancy(request: Request) -> Tenancy:
    tenancy: Tenancy = request.state.tenancy
    return tenancy


Tenants = Annotated[Tenancy, Depends(get_tenancy)]
# The contract describes every stored answer's id so, a sweep's and a stability run's too.
ID_DESCRIPTION = "The benchmark's id: a sha256 hex digest."
BenchmarkId = Annotated[str, Path(pattern=ID_PATTERN, description=ID_DESCRIPTION)]


def require_json(request: Request) -> None:
    """A body, when there is one, must be declared as JSON: anything else is 415.

    A declared media type other than JSON is refused even on an empty body: an HTML form
    or a cross-site ``text/plain`` "simple" request (which a browser sends without asking
    the server first) must not run anything.
    """
    has_body = request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if (
        (has_body or media_type)
        and media_type != "application/json"
        and not (media_type.endswith("+json"))
    ):
        raise UnsupportedMediaTypeError(
            f"the body must be application/json, not "
            f"{clip(media_type) if media_type else 'undeclared'}; "
            "send it with 'Content-Type: application/json'"
        )


def _example(error: ServiceError, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "type": error.type,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "errors": errors or [],
    }


# One typical problem per status, so the documentation shows what each one looks like.
PROBLEM_EXAMPLES: dict[int, dict[str, Any]] = {
    400: _example(
        MalformedRequestError(
            "the body is not valid JSON: Expecting ',' delimiter at line 1, column 14"
        ),
        [{"loc": [], "msg": "Expecting ',' delimiter", "line": 1, "column": 14}],
    ),
    401: _example(
        AuthenticationRequiredError(
            "this request needs an API key: send it as 'Authorization: Bearer <key>' "
            "or 'X-API-Key: <key>'"
        )
    ),
    403: _example(
        QuotaExceededError(
            "storing this would pass the tenant's storage quota: 1073741824 bytes used of "
            "1073741824 allowed (CLUSTERBENCH_TENANT_QUOTA_BYTES)",
            used=1073741824,
            allowed=1073741824,
        ),
        [{"loc": [], "msg": "quota exceeded", "used": 1073741824, "allowed": 1073741824}],
    ),
    404: _example(BenchmarkNotFoundError(f"no benchmark with id {'0' * 64}")),
    406: _example(
        NotAcceptableError(
            "cannot answer with text/html; this resource is available as application/json"
        )
    ),
    409: _example(
        DatasetConflictError(
            f"{'0' * 64} is the stored copy of the built-in dataset 'digits'; "
            "built-in datasets cannot be deleted"
        )
    ),
    413: _example(
        PayloadTooLargeError("the request body is larger than the limit of 268435456 bytes")
    ),
    415: _example(
        UnsupportedMediaTypeError(
            "the body must be application/json, not text/plain; "
            "send it with 'Content-Type: application/json'"
        )
    ),
    422: _example(
        InvalidRequestError(
            "the request is invalid: strategies[1]: unknown strategy 'kmeans++'; "
            "use one of 'k-means++', 'random', 'pca'"
        ),
        [
            {
                "loc": ["strategies", 1],
                "msg": "unknown strategy 'kmeans++'; use one of 'k-means++', 'random', 'pca'",
                "type": "literal_error",
            }
        ],
    ),
    429: _example(
        RateLimitedError(
            "more than 600 requests per 1 minute for this key (CLUSTERBENCH_RATE_LIMIT); "
            "try again in 12 s",
            retry_after=12,
            rate_headers={},
        )
    ),
    503: _example(
        ComputeBusyError(
            "all 2 compute worker(s) are busy and 4 task(s) are waiting; try again later",
            retry_after=3,
        )
    ),
    507: _example(
        StorageFullError(
            "the data directory is full (no space left on the device, or the quota is used "
            "up): storing the request body failed and nothing was stored; retry once it "
            "takes writes again (no restart is needed)"
        )
    ),
    504: _example(
        ComputeTimeoutError(
            "the computation ran past the limit of 300 s (CLUSTERBENCH_TIMEOUT_S) and was "
            "stopped; ask for less work (fewer strategies, smaller n_init or max_iter) or "
            "raise the limit"
        )
    ),
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries documenting the problem statuses a route can answer, each
    with its own example."""
    return {
        status: {
            "model": Problem,
            "content": {"application/json": {"example": PROBLEM_EXAMPLES[status]}},
        }
        for status in statuses
    }


# A PNG answer: its own type, or plain bytes to a client that asks for bytes (generated
# clients read only application/octet-stream as binary).
PNG_TYPES = ("image/png", "application/octet-stream")


def png_response(description: str) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry of a route answering a PNG (see :data:`PNG_TYPES`)."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {200: {"description": description, "content": dict.fromkeys(PNG_TYPES, binary)}}


def etag_matches(if_none_match: str | None, etag: str, *, stored: bool = True) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak or strong), or is ``*``
    and the answer is ``stored`` (a POST's question may never have been answered)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if (candidate == "*" and stored) or candidate.removeprefix("W/") == etag:
            return True
    return False


async def answer_not_modified(
    request: Request, question: Question, engine: BenchmarkEngine
) -> bool:
    """Whether a POST's ``If-None-Match`` names the answer to ``question``; ``*`` does
    only once that answer is stored (it was a 304 for a question never answered)."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    stored = "*" not in header or await question.stored(engine)
    return etag_matches(header, f'"{question.id}"', stored=stored)


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


async def described_dataset(
    engine: BenchmarkEngine, tenants: Tenancy, caller: str | None, dataset_id: str
) -> dict[str, Any] | None:
    """The dataset as the caller sees it (its name, format and column names), or None
    once it was deleted: what a report shows beside a result's own summary."""
    try:
        info = await to_thread.run_sync(engine.datasets.get, dataset_id)
    except DatasetNotFoundError:
        return None
    [described] = await tenants.described(caller, [info])
    return described


def html_response(description: str) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry of a route answering a report page."""
    page = {"text/html": {"schema": {"type": "string"}}}
    return {200: {"description": description, "content": page}}


def html_page(page: str) -> Response:
    """A report page, with the headers that keep it from loading anything."""
    return Response(page, media_type="text/html; charset=utf-8", headers=RESPONSE_HEADERS)


def encode_cursor(text: str) -> str:
    """A page's cursor: ``text``, opaque to the client (URL-safe base64, unpadded)."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, parse: Callable[[str], T]) -> T:
    """What ``parse`` reads from the text of a cursor from :func:`encode_cursor`; 422 when
    it is not one, or ``parse`` raises ValueError."""
    try:
        return parse(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequestError(
            "the cursor is not one this service gave: pass next_cursor from a previous page",
            errors=[{"loc": ["query", "cursor"], "msg": "not a cursor from this service"}],
        ) from None


def split_page(rows: list[T], limit: int) -> tuple[list[T], bool]:
    """A page of at most ``limit`` rows from ``rows`` (read as ``limit + 1``, so that one
    more says a next page exists), and whether one does."""
    return rows[:limit], len(rows) > limit
