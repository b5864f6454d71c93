"""Reading JSON request bodies in routes, and documenting them in OpenAPI.

Bodies are read by hand rather than by FastAPI (see ``service.inline`` for why); the
models they are validated against are registered here so that the OpenAPI document
still shows them.

A body is never held whole in memory past a small size: it is read as it arrives, kept
in memory while it is small and the process's budget for bodies allows, and otherwise
written to a scratch file part by part (measured before: six 200 MB bodies at once held
2.4 GB in the server, and 641 MB were never given back).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from fastapi import Request
from pydantic import BaseModel

from service.api.deps import require_json
from service.engine import BenchmarkEngine
from service.errors import storage_errors

# Models read from bodies by hand: their schemas are added to the OpenAPI components.
BODY_MODELS: dict[str, type[BaseModel]] = {}

# Bodies up to this size may stay in memory (and be decoded on the event loop).
SMALL_BODY_BYTES = 1 << 20


class BodyBudget:
    """The bytes of request bodies this process holds in memory, across requests."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held = 0

    def take(self, n: int) -> bool:
        """Hold ``n`` more bytes if the budget allows; whether it did."""
        if self.held + n > self.max_bytes:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held -= n


@contextlib.asynccontextmanager
async def json_body(request: Request, engine: BenchmarkEngine) -> AsyncIterator[bytes | Path]:
    """The JSON body (415 otherwise): its bytes when small, else the file it was spilled to.

    Either is valid until the context exits; the file is removed then.
    """
    require_json(request)
    budget: BodyBudget = request.state.body_budget
    # The scratch file is made only for a body that spills: a small one (every cache
    # hit's) costs no file system call.
    async with contextlib.AsyncExitStack() as scratch:
        chunks: list[bytes] = []
        try:
            path = await _receive(request, scratch, engine, budget, chunks)
            yield b"".join(chunks) if path is None else path
        finally:
            budget.give(sum(map(len, chunks)))


async def _receive(
    request: Request,
    scratch: contextlib.AsyncExitStack,
    engine: BenchmarkEngine,
    budget: BodyBudget,
    chunks: list[bytes],
) -> Path | None:
    """Read the body into ``chunks`` (taken from ``budget``) or, once it outgrows them,
    into a scratch file kept until ``scratch`` closes; returns that file, if any."""
    path: Path | None = None
    out: IO[bytes] | None = None
    # Closing flushes the last part: on a full disk it is that write which fails.
    with storage_errors("storing the request body", engine.scratch_dir):
        try:
            async for chunk in request.stream():
                if out is None:
                    held = sum(map(len, chunks))
                    if held + len(chunk) <= SMALL_BODY_BYTES and budget.take(len(chunk)):
                        chunks.append(chunk)
                        continue
                    path = await scratch.enter_async_context(engine.scratch_file("body"))
                    out = path.open("wb")
                    out.writelines(chunks)
                    budget.give(held)
                    chunks.clear()
                # One network read (64 KiB at most) to the page cache: microseconds,
                # cheaper on the event loop than a thread hop per part.
                out.write(chunk)
        finally:
            if out is not None:
                out.close()
    return path


def register(model: type[BaseModel]) -> None:
    """Document ``model`` in the OpenAPI components."""
    BODY_MODELS[model.__name__] = model


def body_openapi(
    model: type[BaseModel], *, required: bool, examples: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``openapi_extra`` documenting a route's JSON body as ``model``."""
    register(model)
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    if examples:
        media["examples"] = examples
    return {"requestBody": {"required": required, "content": {"application/json": media}}}
