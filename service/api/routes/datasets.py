"""``/v1/datasets``: upload data once in a common format, then refer to it by id."""

from __future__ import annotations

import pathlib
import shutil
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.responses import Response

from service.api.auth import Caller
from service.api.deps import ID_PATTERN, Engine, Tenants, problems
from service.datasets import BUILTIN_LOADERS, DatasetInfo
from service.errors import (
    DatasetNotFoundError,
    InvalidDataError,
    UnsupportedMediaTypeError,
    clip,
    storage_errors,
)
from service.formats import MEDIA_TYPES, Upload, format_of
from service.schemas import DatasetInfo as DatasetInfoSchema
from service.schemas import DatasetList
from service.tenants import DatasetMeta

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The data: a multipart form with field `file`, or the raw bytes with "
        "their media type. CSV has a header row; `.npz` holds `X` and optionally `y`; "
        'JSON is `{"X": [[...]], "y": [...]}`; `text/x-libsvm` is svmlight / libsvm text '
        "(its targets the labels) and `application/x-scipy-sparse` a `scipy.sparse.save_npz` "
        "file (CSR or CSC): both stay sparse.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            # Every raw format the service reads, as the bytes of a file; CSV and JSON
            # below with their examples.
            **dict.fromkeys(MEDIA_TYPES, _BINARY),
            "text/csv": {**_BINARY, "example": "a,b,label\n1,2,x\n3,4,y\n"},
            "text/x-libsvm": {**_BINARY, "example": "1 1:0.8 4:0.3\n2 3:0.9 5:0.4\n"},
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


def _json(answer: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # Unset fields stay out: a dense dataset's answer has no density.
    body = answer.model_dump_json(exclude_unset=True)
    return Response(body, status, headers=headers, media_type="application/json")


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
                    f"use a .csv, .npy, .npz, .parquet, .json, .svm or .libsvm file, or one of "
                    f"{SUPPORTED}"
                )

            def copy() -> None:
                with storage_errors("storing the upload", path.parent), path.open("wb") as out:
                    shutil.copyfileobj(upload.file, out, 1 << 20)

            await to_thread.run_sync(copy)
            return fmt, upload.filename
    fmt = format_of(media_type)
    if fmt is None:
        raise UnsupportedMediaTypeError(
            f"uploads of {clip(media_type) if media_type else 'undeclared'} are not supported; "
            f"use one of {SUPPORTED}"
        )
    with storage_errors("storing the upload", path.parent), path.open("wb") as out:
        async for chunk in request.stream():
            out.write(chunk)
    return fmt, None


@router.post(
    "",
    status_code=201,
    response_model=DatasetInfoSchema,
    responses={
        200: {"model": DatasetInfoSchema, "description": "The same data was uploaded before."},
        201: {"description": "Stored: the `Location` header names it."},
        **problems(400, 403, 413, 415, 422, 503, 504, 507),
    },
    openapi_extra=UPLOAD_BODY,
    summary="Upload a dataset",
)
async def upload_dataset(
    request: Request,
    engine: Engine,
    caller: Caller,
    tenants: Tenants,
    label_column: Annotated[
        str | None,
        Query(
            max_length=1000,
            description="For CSV and Parquet: the column holding the labels.",
        ),
    ] = None,
    categorical: Annotated[
        str | None,
        Query(
            max_length=10_000,
            description="For CSV and Parquet: columns (comma-separated names) to treat as "
            "categories whatever they hold; one-hot encoded in the fitted pipeline.",
            examples=["island,sex"],
        ),
    ] = None,
    weight_column: Annotated[
        str | None,
        Query(
            max_length=1000,
            description="For CSV and Parquet: the column holding each row's `sample_weight` "
            "(numbers >= 0, none missing).",
        ),
    ] = None,
) -> Response:
    """Store the data once, by the hash of its numbers; the same data again answers 200.

    A CSV whose first line is all numbers is read as data without a header; an unnamed
    first column counting 0 to n-1 (pandas' index) is dropped. `warnings` says so.
    Missing cells are kept as missing; text columns are categorical (see API.md Part 3)."""
    await tenants.check_quota(caller)
    async with engine.scratch_file("upload") as path:
        fmt, name = await _spool(request, path)

        async def store() -> Upload:
            return await engine.import_file(
                path,
                fmt,
                label_column=label_column,
                name=name,
                private=caller is not None,
                categorical=frozenset(n for n in (categorical or "").split(",") if n),
                weight_column=weight_column,
            )

        upload = await store()
        if caller is not None:
            # New to this tenant is what it is told: whether another holds it stays unsaid,
            # and so do the name and columns another sent it with.
            sent = DatasetMeta(
                name, upload.info.format, upload.feature_names, columns=upload.columns
            )
            created = await tenants.claim_dataset(caller, upload.info.id, sent, store_again=store)
        else:
            created = upload.created
    [described] = await tenants.described(caller, [upload.info])
    return _json(
        DatasetInfoSchema.model_validate({**described, "warnings": upload.warnings}),
        201 if created else 200,
        headers={"Location": f"/v1/datasets/{upload.info.id}"},
    )


@router.get("", response_model=DatasetList, summary="List datasets")
async def list_datasets(engine: Engine, caller: Caller, tenants: Tenants) -> Response:
    """The built-in datasets (with their shapes) and every uploaded one (the caller's);
    data sent inline in a request is not an upload and is not listed (its id, in the
    answer that used it, still works with `GET /v1/datasets/{id}`)."""
    held = None if caller is None else await tenants.listed_datasets(caller)
    builtins = [await engine.builtin(name) for name in BUILTIN_LOADERS]

    def collect() -> list[DatasetInfo]:
        if held is None:
            return [info for info in engine.datasets.stored() if not info.inline]
        found = builtins
        for dataset_id in held:
            try:
                found.append(engine.datasets.get(dataset_id))
            except DatasetNotFoundError:
                continue  # inline data pruned from the store; the claim stays harmless
        return found

    infos = await to_thread.run_sync(collect)
    return _json(DatasetList.model_validate({"datasets": await tenants.described(caller, infos)}))


PathId = Annotated[str, Path(pattern=ID_PATTERN, description="A dataset id (sha256, hex).")]


@router.get(
    "/{dataset_id}",
    response_model=DatasetInfoSchema,
    responses=problems(404, 422),
    summary="Get a dataset",
)
async def get_dataset(
    dataset_id: PathId, engine: Engine, caller: Caller, tenants: Tenants
) -> Response:
    """One dataset's shape, labels, format and dtype."""
    if not await tenants.may_use_dataset(caller, dataset_id, use=False):
        raise DatasetNotFoundError(f"no dataset with id {dataset_id}")
    [described] = await tenants.described(caller, [engine.datasets.get(dataset_id)])
    return _json(DatasetInfoSchema.model_validate(described))


@router.delete(
    "/{dataset_id}",
    status_code=204,
    responses=problems(404, 409, 422, 503, 507),
    summary="Delete a dataset",
)
async def delete_dataset(
    dataset_id: PathId, engine: Engine, caller: Caller, tenants: Tenants
) -> Response:
    """Remove an uploaded dataset (the caller's hold on it; the bytes go with the last
    holder); benchmarks already computed on it stay."""
    if caller is None or dataset_id in await tenants.builtin_ids():
        await to_thread.run_sync(engine.datasets.delete, dataset_id)  # 409 for a built-in
    elif not await tenants.release_dataset(caller, dataset_id):
        raise DatasetNotFoundError(f"no dataset with id {dataset_id}")
    return Response(status_code=204)
