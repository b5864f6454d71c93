"""A stored answer as the API responds it: JSON or, as ``text/plain``, its table, with its
ETag (the answer's id), ``X-Cache`` and ``Vary: Accept``, and its plot as PNG
(:func:`answer_plot`); one way for every kind.

A kind's ``POST`` and ``GET /{id}`` are :func:`answer_post` and :func:`answer_stored`;
what differs between kinds is how an answer is held and responded (a :class:`Respond`),
and for the documents (sweeps, stability runs) that is one :class:`DocumentKind`, whose
two routes :func:`add_document_routes` declares. Every kind's ``GET /{id}/report`` is
:func:`add_report_route`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel
from starlette.responses import Response

from service.api.auth import Caller
from service.api.body import body_openapi
from service.api.create import Document, Kind, create, not_modified
from service.api.deps import (
    ID_DESCRIPTION,
    ID_PATTERN,
    PNG_TYPES,
    Engine,
    Tenants,
    etag_matches,
    html_page,
    html_response,
    negotiate,
    png_response,
    problems,
)
from service.api.routes.jobs import JOB_ACCEPTED, held_result
from service.engine import BenchmarkEngine
from service.errors import ServiceError
from service.questions import Question
from service.schemas.common import hit_form
from service.tenants import Tenancy

REPRESENTATIONS = ("application/json", "text/plain")
# A stored answer never changes under its id.
IMMUTABLE = "public, max-age=31536000, immutable"
# The second paragraph of a document kind's POST description (a benchmark's docstring says it too).
ASYNC_NOTE = (
    "With `Prefer: respond-async`, a result not stored yet is computed by a job: 202 with\n"
    "`Location: /v1/jobs/{id}`."
)

A = TypeVar("A", contravariant=True)
R = TypeVar("R")
Q = TypeVar("Q", bound=Question)
Held = TypeVar("Held")
M = TypeVar("M", bound=BaseModel)


class Respond(Protocol[A]):
    """How a kind responds its answer ``answer`` (stored under ``answer_id``)."""

    def __call__(
        self,
        answer_id: str,
        answer: A,
        cached: bool,
        /,
        *,
        accept: str | None,
        extra: dict[str, str] | None = None,
    ) -> Response: ...


def answer_responses(noun: str, description: str, plain: dict[str, Any]) -> dict[int | str, Any]:
    """The OpenAPI responses of a kind's answer: 200 as JSON or its table (``plain``, the
    ``text/plain`` media type), 304 to ``If-None-Match``."""
    return {
        200: {"description": description, "content": {"text/plain": plain}},
        304: {"description": f"`If-None-Match` names this {noun}: the client has it."},
    }


async def answer_post(request: Request, kind: Kind[R, Q, Held], respond: Respond[Held]) -> Response:
    """A kind's ``POST``: the representation checked first, then :func:`create`."""
    accept = request.headers.get("accept")
    negotiate(accept, REPRESENTATIONS)
    return await create(request, kind, functools.partial(respond, accept=accept))


async def answer_stored(
    request: Request,
    answer_id: str,
    held: Callable[[], Awaitable[Held]],
    respond: Respond[Held],
) -> Response:
    """A kind's ``GET /{id}``: the stored answer the caller holds (``held()``), 304 when
    the client has it, else as a hit, immutable."""
    accept = request.headers.get("accept")
    negotiate(accept, REPRESENTATIONS)
    answer = await held()
    if etag_matches(request.headers.get("if-none-match"), f'"{answer_id}"'):
        return not_modified(answer_id)
    return respond(answer_id, answer, True, accept=accept, extra={"Cache-Control": IMMUTABLE})


def plot_responses(description: str) -> dict[int | str, Any]:
    """The OpenAPI responses of an answer's plot: the PNG (``description``), 304 to
    ``If-None-Match``, and its problems."""
    return {
        **png_response(description),
        304: {"description": "`If-None-Match` names this plot: the client has it."},
        **problems(404, 406, 422, 503, 504),
    }


async def answer_plot(
    request: Request,
    answer_id: str,
    held: Callable[[], Awaitable[Held]],
    draw: Callable[[Held], Awaitable[bytes]],
) -> Response:
    """A stored answer's ``plot.png``: the answer the caller holds (``held()``), 304 when
    the client has its plot, else ``draw(answer)``, immutable."""
    media_type = negotiate(request.headers.get("accept"), PNG_TYPES)
    answer = await held()
    headers = {"ETag": f'"{answer_id}"', "Cache-Control": IMMUTABLE, "Vary": "Accept"}
    if etag_matches(request.headers.get("if-none-match"), f'"{answer_id}"'):
        return Response(status_code=304, headers=headers)
    png = await draw(answer)
    return Response(png, headers=headers, media_type=media_type)


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


@dataclass(frozen=True)
class DocumentKind(Generic[M]):
    """A kind answered by a stored document (a sweep, a stability run): its store kind,
    its answer's model, its table for ``text/plain``, and its 404."""

    kind: str
    model: type[M]
    table: Callable[[M], str]
    missing: Callable[[str], ServiceError]

    def respond(
        self,
        answer_id: str,
        body: bytes,
        cached: bool,
        *,
        accept: str | None,
        extra: dict[str, str] | None = None,
    ) -> Response:
        """The answer as first answered, or on a hit as stored."""
        if cached:
            body = hit_form(answer_id, body)
        return respond_answer(
            answer_id,
            body,
            cached,
            accept=accept,
            table=lambda: self.table(self.model.model_validate_json(body)),
            extra=extra,
        )

    async def held(
        self, engine: BenchmarkEngine, tenants: Tenancy, caller: str | None, answer_id: str
    ) -> bytes:
        """The stored document the caller holds, else its kind's 404."""
        body = await held_result(engine, tenants, caller, self.kind, answer_id)
        if body is None:
            raise self.missing(answer_id)
        return body

    async def answer(
        self, engine: BenchmarkEngine, tenants: Tenancy, caller: str | None, answer_id: str
    ) -> M:
        """The stored document the caller holds, as its model."""
        return self.model.model_validate_json(await self.held(engine, tenants, caller, answer_id))

    async def get(
        self,
        request: Request,
        answer_id: str,
        engine: BenchmarkEngine,
        tenants: Tenancy,
        caller: str | None,
    ) -> Response:
        """``GET /{id}``: the stored document as a hit."""
        held = functools.partial(self.held, engine, tenants, caller, answer_id)
        return await answer_stored(request, answer_id, held, self.respond)


def add_document_routes(
    router: APIRouter,
    documents: DocumentKind[M],
    ask: type[Document[Any]],
    *,
    name: str,
    noun: str,
    answered: str,
    examples: dict[str, Any],
    create_summary: str,
    create_description: str,
    get_summary: str,
) -> None:
    """A document kind's ``POST`` and ``GET /{<name>_id}`` on ``router``, as operations
    ``create_<name>`` and ``get_<name>``: the question ``ask`` reads from the body (its
    request model documented with ``examples``), answered as ``documents``. ``noun`` is
    what the documentation calls one answer, ``answered`` its 200's description."""
    responses = answer_responses(noun, answered, {"schema": {"type": "string"}})
    id_name = f"{name}_id"

    async def create_document(
        request: Request, engine: Engine, caller: Caller, tenants: Tenants
    ) -> Response:
        return await answer_post(request, ask(engine, tenants, caller), documents.respond)

    async def get_document(
        request: Request,
        engine: Engine,
        caller: Caller,
        tenants: Tenants,
        answer_id: str = Path(alias=id_name, pattern=ID_PATTERN, description=ID_DESCRIPTION),
    ) -> Response:
        return await documents.get(request, answer_id, engine, tenants, caller)

    router.add_api_route(
        "",
        create_document,
        methods=["POST"],
        name=f"create_{name}",
        response_model=documents.model,
        responses={**responses, **JOB_ACCEPTED, **problems(400, 403, 406, 413, 415, 422, 503, 504)},
        openapi_extra=body_openapi(ask.model, required=False, examples=examples),
        summary=create_summary,
        description=f"{create_description}\n\n{ASYNC_NOTE}",
    )
    router.add_api_route(
        f"/{{{id_name}}}",
        get_document,
        methods=["GET"],
        name=f"get_{name}",
        response_model=documents.model,
        responses={**responses, **problems(404, 406, 422)},
        summary=get_summary,
        description=f"The same body as the request that made the {noun}, from the cache.",
    )


def add_report_route(
    router: APIRouter,
    name: str,
    noun: str,
    render: Callable[[BenchmarkEngine, Tenancy, str | None, str], Awaitable[str]],
    *,
    page: str,
    problem_codes: tuple[int, ...],
) -> None:
    """``GET /{<name>_id}/report`` on ``router``, as operation ``get_<name>_report``: the
    page ``render(engine, tenants, caller, answer_id)`` makes of the answer (a ``noun``)
    the caller holds, as ``text/html`` that loads nothing; documented, as FastAPI does an
    endpoint, by ``render``'s docstring. ``page`` is its 200's description,
    ``problem_codes`` the problems it may answer."""
    id_name = f"{name}_id"

    async def get_report(
        engine: Engine,
        caller: Caller,
        tenants: Tenants,
        answer_id: str = Path(alias=id_name, pattern=ID_PATTERN, description=ID_DESCRIPTION),
    ) -> Response:
        return html_page(await render(engine, tenants, caller, answer_id))

    router.add_api_route(
        f"/{{{id_name}}}/report",
        get_report,
        methods=["GET"],
        name=f"get_{name}_report",
        response_class=Response,
        responses={**html_response(page), **problems(*problem_codes)},
        summary=f"Get a {noun} as a self-contained HTML report",
        description=inspect.cleandoc(render.__doc__ or ""),
    )
