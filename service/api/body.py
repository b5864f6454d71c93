"""JSON request bodies parsed with orjson, validated by pydantic, documented in OpenAPI.

FastAPI would parse bodies with the standard library and validate every number of a
data matrix one by one; here orjson builds the document and NumPy converts matrices
(see ``service.datasets.as_feature_matrix``), several times faster for large inline data.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from service.api.deps import require_json
from service.errors import MalformedRequestError

M = TypeVar("M", bound=BaseModel)

# Models read by json_body: their schemas are added to the OpenAPI components.
BODY_MODELS: dict[str, type[BaseModel]] = {}


def decode_json(raw: bytes) -> Any:
    """Parse a JSON document; NaN, Infinity and overflowing numbers reach the data checks."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        # The standard library also reads NaN, Infinity and 1e999, which orjson refuses:
        # they are well-formed here and reported as invalid values, with their position.
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MalformedRequestError(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            errors=[{"loc": [], "msg": exc.msg, "line": exc.lineno, "column": exc.colno}],
        ) from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise MalformedRequestError(f"the body is not valid JSON: {exc}") from None


async def read_body(request: Request) -> bytes:
    """The raw body of a request that must be JSON (415 otherwise)."""
    require_json(request)
    return await request.body()


def parse_body(model: type[M], raw: bytes) -> M:
    """Validate raw JSON bytes as ``model``; an empty body is ``{}``."""
    data = decode_json(raw) if raw.strip() else {}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency reading the request's JSON body as ``model``; no body means ``{}``."""
    register(model)

    async def parse(request: Request) -> M:
        return parse_body(model, await read_body(request))

    return parse


def register(model: type[BaseModel]) -> None:
    """Document ``model`` in the OpenAPI components (for bodies read by hand)."""
    BODY_MODELS[model.__name__] = model


def body_openapi(
    model: type[BaseModel], *, required: bool, examples: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``openapi_extra`` documenting a route's JSON body as ``model``."""
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    if examples:
        media["examples"] = examples
    return {"requestBody": {"required": required, "content": {"application/json": media}}}
