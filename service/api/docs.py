"""The served OpenAPI document, finished (body schemas registered, problems typed), and the
pages that show it: Swagger UI and ReDoc, served from this service with no CDN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic.json_schema import models_json_schema

from service.api.body import BODY_MODELS


def customise_openapi(app: FastAPI) -> None:
    """Add the JSON body models' schemas, and list error responses under the problem
    media type, as the handlers send them."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            _, definitions = models_json_schema(
                [(model, "validation") for model in BODY_MODELS.values()],
                ref_template="#/components/schemas/{model}",
            )
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(definitions.get("$defs", {}))
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    _finish_operation(operation)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# The request headers a route reads, declared where its answers say it reads them: a 304
# is the answer to `If-None-Match`, a 202 job the answer to `Prefer: respond-async`. So a
# generated client can send them (openapi-python-client drops undeclared headers).
HEADERS_BY_STATUS: dict[str, dict[str, Any]] = {
    "304": {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": "An ETag the client holds (or `*`): 304 when it names this answer.",
        "schema": {"type": "string"},
    },
    "202": {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "description": "`respond-async` (RFC 7240): a result not stored yet is computed by "
        "a job, answered 202 with `Location: /v1/jobs/{id}`. Other preferences are "
        "ignored, as RFC 7240 asks.",
        # No enum (a preference the server does not know is ignored, not refused) and no
        # example (Swagger UI's "Try it out" would send it, making every try a job).
        "schema": {"type": "string"},
    },
}
# Answers a client reads as text or JSON; every other media type is bytes to it.
TEXT_MEDIA = ("application/json", "application/problem+json", "text/plain", "text/event-stream")


def _finish_operation(operation: dict[str, Any]) -> None:
    """Problems under their media type, bytes as binary strings, headers declared."""
    responses = operation.get("responses", {})
    for status, response in responses.items():
        content = response.get("content", {})
        if status[0] in "45" and "application/json" in content:
            content["application/problem+json"] = content.pop("application/json")
        for media_type, media in content.items():
            if not media_type.startswith(TEXT_MEDIA):
                media["schema"] = {"type": "string", "format": "binary"}
    declared = {p["name"].lower() for p in operation.get("parameters", [])}
    for status, header in HEADERS_BY_STATUS.items():
        if status in responses and header["name"].lower() not in declared:
            operation.setdefault("parameters", []).append(dict(header))


# Swagger UI's and ReDoc's scripts, style and favicon as the fastapi-offline package ships
# them, so the pages work with no network: FastAPI's defaults load them from a CDN.
STATIC_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
STATIC_PATH = "/static"
DOCS_PATH = "/docs"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
REDOC_PATH = "/redoc"


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` and ReDoc at ``/redoc`` from this service alone, and
    redirect ``/`` to ``/docs``.

    FastAPI's self-hosting recipe: the app is built with ``docs_url=None, redoc_url=None``
    and these routes take their place.
    """
    assert app.openapi_url is not None
    openapi_path = app.openapi_url
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="static")
    # FastAPI's own route serves app.openapi() as it is: this one leaves the keys out of
    # the document while the service is open (no key exists), so Swagger UI shows no
    # padlocks. app.openapi(), the committed document, keeps them.
    app.router.routes[:] = [
        route for route in app.router.routes if getattr(route, "path", None) != openapi_path
    ]

    @app.get(openapi_path, include_in_schema=False)
    async def openapi_document(request: Request) -> JSONResponse:
        schema = app.openapi()
        if not await request.state.tenancy.keys_required():
            schema = without_keys(schema)
        return JSONResponse(schema)

    @app.get("/", include_in_schema=False)
    async def root(request: Request) -> RedirectResponse:
        return RedirectResponse(_root(request) + DOCS_PATH, status_code=307)

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_path,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_PATH,
            swagger_js_url=f"{root}{STATIC_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_PATH}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        page = get_redoc_html(
            openapi_url=root + openapi_path,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_PATH}/favicon.png",
            with_google_fonts=False,
        )
        # ReDoc's sidebar always loads its logo from cdn.redoc.ly (and hides it when that
        # fails): tell the browser not to try, so the page makes no request elsewhere.
        page.headers["Content-Security-Policy"] = "img-src 'self' data:"
        return page


def without_keys(schema: dict[str, Any]) -> dict[str, Any]:
    """The document with no security scheme and no operation's ``security``: a service
    with no key asks for none."""
    paths = {
        path: {
            method: {k: v for k, v in operation.items() if k != "security"}
            for method, operation in item.items()
        }
        for path, item in schema.get("paths", {}).items()
    }
    components = {k: v for k, v in schema.get("components", {}).items() if k != "securitySchemes"}
    return {**schema, "paths": paths, "components": components}


def _root(request: Request) -> str:
    # Behind a proxy that strips a prefix, links must carry it (as FastAPI's own pages do).
    root_path: str = request.scope.get("root_path", "")
    return root_path.rstrip("/")
