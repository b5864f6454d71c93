"""``/v1/models``: the fitted models of benchmarks, predictions and anomalies with them, and
their export to ONNX."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel
from starlette.responses import Response

from service.api.auth import Caller
from service.api.body import body_openapi, json_body
from service.api.deps import ID_PATTERN, Engine, Tenants, etag_matches, problems
from service.benchmark import FittedModel
from service.engine import ONNX_KIND, BenchmarkEngine
from service.errors import ModelNotFoundError
from service.schemas import (
    Anomalies,
    AnomaliesRequest,
    ModelInfo,
    Prediction,
    PredictRequest,
)
from service.tenants import MODEL, Tenancy

router = APIRouter(prefix="/v1/models", tags=["models"])

ONNX_MEDIA_TYPE = "application/octet-stream"

ModelId = Annotated[str, Path(pattern=ID_PATTERN, description="A model id from a benchmark.")]


def _describe(model_id: str, model: FittedModel) -> ModelInfo:
    scaler = None
    if model.scaler_mean is not None and model.scaler_scale is not None:
        scaler = {"mean": model.scaler_mean.tolist(), "scale": model.scaler_scale.tolist()}
    return ModelInfo.model_validate(
        {
            "model_id": model_id,
            "init": model.init,
            "n_clusters": model.n_clusters,
            "n_features": model.n_features,
            "cluster_centers": model.centers_in_feature_space().tolist(),
            "scaler": scaler,
            "normalize": "l2" if model.normalize else "none",
            "inertia": model.inertia,
            "n_iter": model.n_iter,
            "estimator": model.estimator,
            "onnx_url": f"/v1/models/{model_id}/model.onnx",
            "clusters": model.profiles(),
        }
    )


async def _check_held(tenants: Tenancy, caller: str | None, model_id: str) -> None:
    """404 for a model the caller does not hold, as if it did not exist."""
    if not await tenants.holds(caller, MODEL, model_id):
        raise ModelNotFoundError(f"no model with id {model_id}")


def _add_samples_route(
    name: str,
    body: type[BaseModel],
    answer: type[BaseModel],
    compute: Callable[[BenchmarkEngine, str, bytes | FilePath], Awaitable[bytes]],
    *,
    summary: str,
    description: str,
) -> None:
    """``POST /{model_id}/<name>``, as operation ``<name>``: the JSON ``answer`` that
    ``compute(engine, model_id, body)`` gives with the caller's model to a ``body`` of
    samples, read as every JSON body is (counted, and in a data-lane worker past its
    inline bound)."""

    async def answer_samples(
        model_id: ModelId, request: Request, engine: Engine, caller: Caller, tenants: Tenants
    ) -> Response:
        await _check_held(tenants, caller, model_id)
        async with json_body(request, engine) as samples:
            content = await compute(engine, model_id, samples)
        return Response(content, media_type="application/json")

    router.add_api_route(
        f"/{{model_id}}/{name}",
        answer_samples,
        methods=["POST"],
        name=name,
        response_model=answer,
        responses=problems(400, 404, 413, 415, 422, 503, 504),
        openapi_extra=body_openapi(body, required=True),
        summary=summary,
        description=description,
    )


@router.get(
    "/{model_id}",
    response_model=ModelInfo,
    responses={304: {"description": "Not modified."}, **problems(404, 422)},
    summary="Get a fitted model",
)
async def get_model(
    model_id: ModelId, request: Request, engine: Engine, caller: Caller, tenants: Tenants
) -> Response:
    """The model's centres (in the original feature space) and its scaler."""
    await _check_held(tenants, caller, model_id)
    model = await engine.get_model(model_id)
    headers = {"ETag": f'"{model_id}"'}
    if etag_matches(request.headers.get("if-none-match"), f'"{model_id}"'):
        return Response(status_code=304, headers=headers)
    body = _describe(model_id, model).model_dump_json()
    return Response(body, headers=headers, media_type="application/json")


_add_samples_route(
    "predict",
    PredictRequest,
    Prediction,
    BenchmarkEngine.predict,
    summary="Assign samples to a model's clusters",
    description="Each sample's nearest centre and its distance to it, as the fitted pipeline "
    "predicts.",
)


@router.get(
    "/{model_id}/model.onnx",
    response_class=Response,
    responses={
        200: {
            "content": {ONNX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            "description": "The whole fitted pipeline converted with skl2onnx: input `X` "
            "(float32), outputs `label` (int64) and `scores` (distances to each centre).",
        },
        304: {"description": "`If-None-Match` names this model: the client has it."},
        **problems(404, 422, 503, 504),
    },
    summary="Export a fitted model to ONNX",
)
async def get_model_onnx(
    model_id: ModelId, request: Request, engine: Engine, caller: Caller, tenants: Tenants
) -> Response:
    """The model's pipeline as ONNX, to score with onnxruntime anywhere; 422 naming a step
    skl2onnx cannot convert."""
    await _check_held(tenants, caller, model_id)
    headers = {
        "ETag": f'"{model_id}.onnx"',
        "Content-Disposition": f'attachment; filename="{model_id}.onnx"',
    }
    if etag_matches(request.headers.get("if-none-match"), headers["ETag"]):
        await engine.get_model(model_id)  # 404 once it is gone, even for a client that has it
        return Response(status_code=304, headers=headers)
    onnx = await engine.get_or_export_onnx(model_id)
    await tenants.claim_result_plot(caller, ONNX_KIND, model_id, len(onnx))
    return Response(onnx, headers=headers, media_type=ONNX_MEDIA_TYPE)


_add_samples_route(
    "anomalies",
    AnomaliesRequest,
    Anomalies,
    BenchmarkEngine.anomalies,
    summary="Flag samples far from their centre",
    description="Each sample's nearest centre and distance, flagged when the distance passes "
    "the (1 - contamination) quantile of the training rows' distances to their own centre.",
)
