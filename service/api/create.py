"""The create sequence of every kind's ``POST``, written once.

Read the body and resolve it (the data it sends or names is the caller's now), answer
304 to an ``If-None-Match`` naming the answer, refuse a tenant at its quota, hand the
question to a job under ``Prefer: respond-async`` (202), else compute it once (or read it
from the cache), give it to the caller, and respond. What differs between benchmarks,
sweeps and stability runs is a :class:`Kind`; the route negotiates the representation,
calls :func:`create` and its ``respond`` builds the 200.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from fastapi import Request
from pydantic import BaseModel
from starlette.responses import Response

from service.api.body import json_body
from service.api.deps import answer_not_modified, etag_matches
from service.api.routes.jobs import prefers_async, respond_async
from service.datasets import DatasetInfo
from service.engine import BenchmarkEngine, MayUse
from service.questions import (
    Question,
    StabilityQuestion,
    SweepQuestion,
    resolve_stability,
    resolve_sweep,
)
from service.schemas import StabilityRequest, SweepRequest
from service.tenants import Tenancy

R = TypeVar("R")  # what a body resolves to
Q = TypeVar("Q", bound=Question)
A = TypeVar("A")  # an answer: a stored benchmark, a document's bytes
M = TypeVar("M", bound=BaseModel)

# The 200: (the answer's id, the answer, whether it came from the cache) to a response.
Respond = Callable[[str, A, bool], Response]


class Kind(Generic[R, Q, A]):
    """What a kind of question brings to :func:`create`; ``caller`` is the tenant
    (None in single-user mode)."""

    def __init__(self, engine: BenchmarkEngine, tenants: Tenancy, caller: str | None) -> None:
        self.engine = engine
        self.tenants = tenants
        self.caller = caller
        # Whether the caller may name an uploaded dataset by its id: one it holds.
        self.may_use: MayUse | None = (
            None if caller is None else functools.partial(tenants.may_use_dataset, caller)
        )

    async def hit(self, body: bytes | Path) -> tuple[str, A] | None:
        """The answer's id and its stored answer, when known from the body's bytes alone."""
        return None

    async def read(self, body: bytes | Path) -> R:
        """The body resolved against its data (stored now if it came inline)."""
        raise NotImplementedError

    def dataset(self, read: R) -> DatasetInfo:
        raise NotImplementedError

    async def question(self, read: R) -> Q:
        """The question the resolved body asks, with its defaults applied."""
        raise NotImplementedError

    async def answer(self, question: Q) -> tuple[A, bool]:
        """The answer, computed once or read from the cache, and whether it was cached."""
        raise NotImplementedError

    async def claim(self, answer: A, question: Q | None = None) -> None:
        """Give the caller the answer (``question`` is None for a :meth:`hit`)."""
        raise NotImplementedError


async def create(request: Request, kind: Kind[R, Q, A], respond: Respond[A]) -> Response:
    """The whole ``POST`` of a kind after content negotiation: 200, 202 or 304."""
    engine, tenants, caller = kind.engine, kind.tenants, kind.caller
    async with json_body(request, engine) as body:
        hit = await kind.hit(body)
        if hit is not None:
            answer_id, stored = hit
            if etag_matches(request.headers.get("if-none-match"), f'"{answer_id}"'):
                return not_modified(answer_id)
            await kind.claim(stored)
            return respond(answer_id, stored, True)
        read = await kind.read(body)
        # The data sent inline is the caller's now (within its quota); named data it held.
        await tenants.claim_dataset(
            caller, kind.dataset(read).id, store_again=lambda: kind.read(body)
        )
    question = await kind.question(read)
    if await answer_not_modified(request, question, engine):
        return not_modified(question.id)
    if caller is not None and not await tenants.holds(caller, question.kind, question.id):
        await tenants.check_quota(caller)
    if prefers_async(request):
        accepted = await respond_async(request, question, caller, tenants)
        if accepted is not None:
            return accepted
    answer, cached = await kind.answer(question)
    await kind.claim(answer, question)
    return respond(question.id, answer, cached)


def not_modified(answer_id: str) -> Response:
    """304: the client has the answer ``answer_id``."""
    return Response(status_code=304, headers={"ETag": f'"{answer_id}"', "Vary": "Accept"})


DocumentQuestion = SweepQuestion | StabilityQuestion


class Document(Kind[tuple[M, DatasetInfo], DocumentQuestion, bytes]):
    """A question answered by one stored JSON document, asked by a request model with
    data fields (``X``, ``y`` or ``dataset``)."""

    model: type[M]

    async def read(self, body: bytes | Path) -> tuple[M, DatasetInfo]:
        return await self.engine.resolve_data(self.model, body, may_use=self.may_use)

    def dataset(self, read: tuple[M, DatasetInfo]) -> DatasetInfo:
        return read[1]

    async def answer(self, question: DocumentQuestion) -> tuple[bytes, bool]:
        return await question.get_or_compute(self.engine)

    async def claim(self, answer: bytes, question: DocumentQuestion | None = None) -> None:
        assert question is not None  # a document has no hit from the body's bytes
        await self.tenants.claim_result(
            self.caller, question.kind, question.id, question.dataset.id, len(answer)
        )


class Sweep(Document[SweepRequest]):
    """A sweep over k."""

    model = SweepRequest

    async def question(self, read: tuple[SweepRequest, DatasetInfo]) -> SweepQuestion:
        return resolve_sweep(*read)


class Stability(Document[StabilityRequest]):
    """A stability run over seeds: a benchmark's request, resolved as one."""

    model = StabilityRequest

    async def question(self, read: tuple[StabilityRequest, DatasetInfo]) -> StabilityQuestion:
        return await resolve_stability(self.engine, *read, may_use=self.may_use)
