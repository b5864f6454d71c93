"""Reading JSON request bodies in routes, and documenting them in OpenAPI.

Bodies are read by hand rather than by FastAPI (see ``service.inline`` for why); the
models they are validated against are registered here so that the OpenAPI document
still shows them.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel

from service.api.deps import require_json

# Models read from bodies by hand: their schemas are added to the OpenAPI components.
BODY_MODELS: dict[str, type[BaseModel]] = {}


async def read_body(request: Request) -> bytes:
    """The raw body of a request that must be JSON (415 otherwise)."""
    require_json(request)
    return await request.body()


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
