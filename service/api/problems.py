"""Every error as ``application/problem+json`` (RFC 9457), never a traceback."""

from __future__ import annotations

import logging
import sqlite3
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from service.errors import InvalidRequestError, ServiceError, StorageError
from service.inline import request_errors
from service.schemas import Problem

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = Problem(
        type=type_,
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        errors=errors or [],
    )
    return Response(body.model_dump_json(), status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def service_problem(exc: ServiceError) -> Response:
    """``exc`` as its problem response, with its headers (``Retry-After``, ...)."""
    return problem_response(
        exc.status,
        exc.detail,
        title=exc.title,
        type_=exc.type,
        errors=exc.errors,
        headers=exc.headers(),
    )


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    if isinstance(exc, StorageError) and exc.directory is not None:
        # The data directory's disk refused a write: the operator's to know, in one line.
        logger.warning("%s %s: %s", request.method, request.url.path, exc.detail)
        request.state.space.refused(exc)
    return service_problem(exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    # FastAPI's own validation: path and query parameters (bodies are read by hand).
    assert isinstance(exc, RequestValidationError)
    return await _service_error(request, InvalidRequestError.listing(request_errors(exc.errors())))


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(exc.status_code, detail, headers=headers)


async def _storage_error(request: Request, exc: Exception) -> Response:
    # A write the disk refused where no layer below said so. Answered here, not by the
    # handler of last resort: that one re-raises, and uvicorn then drops the connection
    # (the client's next request on it was reset) and logs the error a second time.
    storage = StorageError.of(
        exc, "writing this request's data", directory=request.app.state.settings.data_dir
    )
    if storage is None:
        raise exc
    return await _service_error(request, storage)


async def _client_gone(request: Request, _: Exception) -> Response:
    # The client left before its body was read: nobody is there to read an answer, and
    # it is no fault of the service (it was logged as "Exception in ASGI application",
    # with a traceback per connection, when a flood of clients gave up).
    logger.warning(
        "%s %s: the client left before its body was read", request.method, request.url.path
    )
    return problem_response(400, "the client disconnected before its request's body was read")


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "an unexpected error occurred; it has been logged")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OSError, _storage_error)
    app.add_exception_handler(sqlite3.Error, _storage_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected_error)
