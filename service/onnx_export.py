"""A fitted model as an ONNX graph (``skl2onnx``), to score anywhere without the service.

``skl2onnx`` and ``onnx`` are imported inside :func:`model_to_onnx`, which runs in a
compute worker: the API process never loads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from service.benchmark import FittedModel, estimator_class
from service.errors import ModelNotConvertibleError
from service.tables import Preprocessing

if TYPE_CHECKING:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

# The name of the graph's input: float32 samples, n_samples by n_features. A table's
# model has one input per column instead, named as the column: float32 for a numeric
# one (NaN missing), a string for a categorical one ("" missing).
INPUT_NAME = "X"
MISSING_CATEGORY = ""


def fitted_pipeline(model: FittedModel) -> Pipeline:
    """The scikit-learn pipeline ``model`` holds, rebuilt from its arrays (no refit).

    Its ``predict`` and ``transform`` are those of the pipeline the benchmark fitted.
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    steps: list[StandardScaler | Normalizer | object] = []
    if model.scaler_mean is not None and model.scaler_scale is not None:
        scaler = StandardScaler()
        scaler.mean_ = model.scaler_mean
        scaler.scale_ = model.scaler_scale
        scaler.var_ = model.scaler_scale**2
        scaler.n_features_in_ = model.n_features
        scaler.n_samples_seen_ = model.n_train
        steps.append(scaler)
    if model.normalize:
        steps.append(Normalizer())
    estimator = estimator_class(model.estimator)(n_clusters=model.n_clusters)
    estimator.cluster_centers_ = model.cluster_centers
    estimator.n_features_in_ = model.n_features
    steps.append(estimator)
    return make_pipeline(*steps)


def column_transformer(prep: Preprocessing) -> ColumnTransformer:
    """A table model's preprocessing as the fitted ``ColumnTransformer`` it stands for
    (see :mod:`service.tables`), rebuilt from what the fit learnt (no refit).

    Its categorical columns take strings, a missing one as ``""`` (MISSING_CATEGORY).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    numeric, categorical = prep.numeric_names, prep.categorical_names
    onehot = OneHotEncoder(
        categories=[list(values) for values in prep.categories],
        handle_unknown="ignore",
        sparse_output=False,
    ).fit(np.array([[values[0] for values in prep.categories]], dtype=object))
    steps: list[tuple[str, Any, list[str]]] = []
    if numeric:
        number_step: Any = "passthrough"
        if prep.numeric_fill is not None:
            number_step = _imputer(np.array(prep.numeric_fill), np.nan, "mean")
        steps.append(("num", number_step, numeric))
    if categorical:
        category_step: Any = onehot
        if prep.category_fill is not None:
            fill = np.array(prep.category_fill, dtype=object)
            category_step = make_pipeline(_imputer(fill, MISSING_CATEGORY, "most_frequent"), onehot)
        steps.append(("cat", category_step, categorical))
    transformer = ColumnTransformer(steps)
    # What fit() would have set: the converter reads the transformers as fitted.
    transformer.transformers_ = steps
    transformer.feature_names_in_ = np.array([n for n, _ in prep.features], dtype=object)
    transformer.n_features_in_ = len(prep.features)
    transformer._columns = [columns for _, _, columns in steps]
    transformer._remainder = ("remainder", "drop", [])
    transformer.sparse_output_ = False
    return transformer


def _imputer(statistics: np.ndarray, missing: Any, strategy: str) -> SimpleImputer:
    from sklearn.impute import SimpleImputer

    imputer = SimpleImputer(missing_values=missing, strategy=strategy)
    imputer.statistics_ = statistics
    imputer.n_features_in_ = len(statistics)
    return imputer


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
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from skl2onnx.common.exceptions import MissingConverter, MissingShapeCalculator
    from sklearn.pipeline import Pipeline

    pipeline = fitted_pipeline(model)
    inputs: list[tuple[str, Any]] = [(INPUT_NAME, FloatTensorType([None, model.n_features]))]
    if model.preprocessing is not None:
        # A table's model takes its raw columns, one input each, as /predict does.
        pipeline = Pipeline(
            [("columntransformer", column_transformer(model.preprocessing)), *pipeline.steps]
        )
        inputs = [
            (name, FloatTensorType([None, 1]) if kind == "numeric" else StringTensorType([None, 1]))
            for name, kind in model.preprocessing.features
        ]
    try:
        onnx_model = convert_sklearn(
            pipeline, name=f"clusterbench {model.estimator} {model.init}", initial_types=inputs
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
