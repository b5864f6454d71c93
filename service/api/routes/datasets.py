"""``/v1/datasets``: upload data once in a common format, then refer to it by id."""

from __future__ import annotations

import pathlib
import shutil
from typing import Annotated, Any

import orjson
from anyio import to_thread
from fastapi import APIRouter, Path, Query, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from service.api.deps import ID_PATTERN, Engine, problems
from service.datasets import BUILTIN_LOADERS
from service.errors import InvalidDataError, UnsupportedMediaTypeError, clip
from service.formats import MEDIA_TYPES, format_of
from service.schemas import DatasetInfo, DatasetList

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The data: a multipart form with field `file`, or the raw bytes with "
        "their media type. CSV has a header row; `.npz` holds `X` and optionally `y`; "
        'JSON is `{"X": [[...]], "y": [...]}`.',
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "text/csv": {"schema": {"type": "string"}, "example": "a,b,label\n1,2,x\n3,4,y\n"},
            "application/x-npy": _BINARY,
            "application/x-npz": _BINARY,
            "application/vnd.apache.parquet": _BINARY,
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "X": {
                            "type": "array",
                            "items": {"type": "array", "items": {"type": "number"}},
                        },
                        "y": {
                            "type": "array",
                            "items": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                        },
                    },
                    "required": ["X"],
                },
                "example": {"X": [[0, 0], [0, 1], [5, 5], [5, 6]], "y": [0, 0, 1, 1]},
            },
        },
    }
}
SUPPORTED = ", ".join([*MEDIA_TYPES, "multipart/form-data"])


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(value), status, headers=headers, media_type="application/json")


async def _spool(request: Request, path: pathlib.Path) -> tuple[str, str | None]:
    """Write the upload to ``path``; returns its format and its file name, if any."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidDataError(
                    "the multipart form must carry the data in a file field named 'file' "
                    "(curl -F file=@data.csv)",
                    errors=[{"loc": ["file"], "msg": "missing"}],
                )
            fmt = format_of(upload.content_type, upload.filename)
            if fmt is None:
                raise UnsupportedMediaTypeError(
                    f"cannot tell the format of {clip(upload.filename or '')} "
                    f"({clip(upload.content_type or '')}): "
                    f"use a .csv, .npy, .npz, .parquet or .json file, or one of {SUPPORTED}"
                )

            def copy() -> None:
                with path.open("wb") as out:
                    shutil.copyfileobj(upload.file, out, 1 << 20)

            await to_thread.run_sync(copy)
            return fmt, upload.filename
    fmt = format_of(media_type)
    if fmt is None:
        raise UnsupportedMediaTypeError(
            f"uploads of {clip(media_type) if media_type else 'undeclared'} are not supported; "
            f"use one of {SUPPORTED}"
        )
    with path.open("wb") as out:
        async for chunk in request.stream():
            out.write(chunk)
    return fmt, None


@router.post(
    "",
    status_code=201,
    response_model=DatasetInfo,
    responses={
        200: {"model": DatasetInfo, "description": "The same data was uploaded before."},
        201: {"description": "Stored: the `Location` header names it."},
        **problems(400, 413, 415, 422),
    },
    openapi_extra=UPLOAD_BODY,
    summary="Upload a dataset",
)
async def upload_dataset(
    request: Request,
    engine: Engine,
    label_column: Annotated[
        str | None,
        Query(
            max_length=1000,
            description="For CSV and Parquet: the column holding the labels.",
        ),
    ] = None,
) -> Response:
    """Store the data once, by the hash of its numbers; the same data again answers 200.

    A CSV whose first line is all numbers is read as data without a header; an unnamed
    first column counting 0 to n-1 (pandas' index) is dropped. `warnings` says so."""
    async with engine.scratch_file("upload") as path:
        fmt, name = await _spool(request, path)
        upload = await engine.import_file(path, fmt, label_column=label_column, name=name)
    return _json(
        {**upload.info.described(), "warnings": upload.warnings},
        201 if upload.created else 200,
        headers={"Location": f"/v1/datasets/{upload.info.id}"},
    )


@router.get("", response_model=DatasetList, summary="List datasets")
async def list_datasets(engine: Engine) -> Response:
    """The built-in datasets (with their shapes) and every uploaded one."""

    def collect() -> list[dict[str, Any]]:
        for name in BUILTIN_LOADERS:
            engine.datasets.builtin(name)
        return [info.described() for info in engine.datasets.stored()]

    return _json({"datasets": await to_thread.run_sync(collect)})


PathId = Annotated[str, Path(pattern=ID_PATTERN, description="A dataset id (sha256, hex).")]


@router.get(
    "/{dataset_id}",
    response_model=DatasetInfo,
    responses=problems(404, 422),
    summary="Get a dataset",
)
async def get_dataset(dataset_id: PathId, engine: Engine) -> Response:
    """One dataset's shape, labels, format and dtype."""
    return _json(engine.datasets.get(dataset_id).described())


@router.delete(
    "/{dataset_id}", status_code=204, responses=problems(404, 409, 422), summary="Delete a dataset"
)
async def delete_dataset(dataset_id: PathId, engine: Engine) -> Response:
    """Remove an uploaded dataset; benchmarks already computed on it stay."""
    await to_thread.run_sync(engine.datasets.delete, dataset_id)
    return Response(status_code=204)
