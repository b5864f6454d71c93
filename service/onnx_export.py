"""A fitted model as an ONNX graph (``skl2onnx``), to score anywhere without the service.

``skl2onnx`` and ``onnx`` are imported inside :func:`model_to_onnx`, which runs in a
compute worker: the API process never loads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.benchmark import FittedModel, estimator_class
from service.errors import ModelNotConvertibleError

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

# The name of the graph's input: float32 samples, n_samples by n_features.
INPUT_NAME = "X"


def fitted_pipeline(model: FittedModel) -> Pipeline:
    """The scikit-learn pipeline ``model`` holds, rebuilt from its arrays (no refit).

    Its ``predict`` and ``transform`` are those of the pipeline the benchmark fitted.
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps: list[StandardScaler | object] = []
    if model.scaler_mean is not None and model.scaler_scale is not None:
        scaler = StandardScaler()
        scaler.mean_ = model.scaler_mean
        scaler.scale_ = model.scaler_scale
        scaler.var_ = model.scaler_scale**2
        scaler.n_features_in_ = model.n_features
        scaler.n_samples_seen_ = model.n_train
        steps.append(scaler)
    estimator = estimator_class(model.estimator)(n_clusters=model.n_clusters)
    estimator.cluster_centers_ = model.cluster_centers
    estimator.n_features_in_ = model.n_features
    steps.append(estimator)
    return make_pipeline(*steps)


def model_to_onnx(model: FittedModel) -> bytes:
    """``model``'s whole pipeline as a serialised ONNX model.

    Its input ``X`` is float32 (n_samples, n_features); its outputs are ``label``
    (int64, n_samples) and ``scores`` (float32, n_samples by n_clusters: the distances
    to each centre, as ``KMeans.transform`` measures them).

    Raises
    ------
    ModelNotConvertibleError
        A step has no ONNX converter (``BisectingKMeans``); the detail names it.
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from skl2onnx.common.exceptions import MissingConverter, MissingShapeCalculator

    pipeline = fitted_pipeline(model)
    try:
        onnx_model = convert_sklearn(
            pipeline,
            name=f"clusterbench {model.estimator} {model.init}",
            initial_types=[(INPUT_NAME, FloatTensorType([None, model.n_features]))],
        )
    except (MissingConverter, MissingShapeCalculator) as exc:
        name, step = next(
            ((n, s) for n, s in pipeline.steps if repr(type(s)) in str(exc)),
            pipeline.steps[-1],
        )
        raise ModelNotConvertibleError(
            f"the step {name!r} ({type(step).__name__}) of this model's pipeline cannot be "
            "converted to ONNX: skl2onnx has no converter for it",
            errors=[{"loc": ["model_id"], "msg": f"{type(step).__name__} not convertible"}],
        ) from None
    data: bytes = onnx_model.SerializeToString()
    return data
