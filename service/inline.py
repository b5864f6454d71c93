"""Request bodies: JSON decoded with orjson, validated by pydantic, matrices made by NumPy.

FastAPI would parse bodies with the standard library and validate every number of a
data matrix one by one. Here orjson builds the document and NumPy converts matrices
(``service.datasets.as_feature_matrix``), several times faster. Bodies too large to
decode without stalling the event loop (decoding holds the GIL) are handled whole in a
compute worker by the ``*_in_worker`` functions, which return only small results.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

from service import benchmark as bm
from service.benchmark import FittedModel
from service.datasets import (
    BUILTIN_LOADERS,
    DatasetInfo,
    DatasetStore,
    as_feature_matrix,
    as_labels,
)
from service.errors import (
    InvalidCentersError,
    InvalidRequestError,
    MalformedRequestError,
    PayloadTooLargeError,
)
from service.formats import DataLimits, check_cells, check_stored_bytes, label_bytes
from service.schemas import (
    STRATEGY_TAGS,
    AnomaliesRequest,
    BenchmarkRequest,
    Prediction,
    PredictRequest,
    StrategySpec,
)

M = TypeVar("M", bound=BaseModel)


class OversizedInteger:
    """A JSON integer with more digits than Python converts (``sys.get_int_max_str_digits``).

    Decoded as this marker rather than failing the whole body, so that validation names
    where it is: no field takes it, and the data checks report it as not a number.
    """

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))

    def __repr__(self) -> str:
        return f"<an integer of {self.digits} digits, too large>"


def _parse_int(text: str) -> int | OversizedInteger:
    try:
        return int(text)
    except ValueError:  # more digits than int() converts: a denial of service guard
        return OversizedInteger(text)


def decode_json(raw: bytes) -> Any:
    """Parse a JSON document; NaN, Infinity and overflowing numbers reach the data checks."""
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        # The standard library also reads NaN, Infinity and 1e999, which orjson refuses:
        # they are well-formed here and reported as invalid values, with their position.
        return json.loads(raw, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise MalformedRequestError(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            errors=[{"loc": [], "msg": exc.msg, "line": exc.lineno, "column": exc.colno}],
        ) from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise MalformedRequestError(f"the body is not valid JSON: {exc}") from None


def validate(model: type[M], raw: bytes) -> M:
    """Raw JSON bytes as ``model``; an empty body is ``{}``."""
    try:
        return model.model_validate(decode_json(raw))
    except ValidationError as exc:
        raise InvalidRequestError.listing(
            request_errors(exc.errors(include_url=False), model)
        ) from None


def request_errors(errors: Sequence[Any], model: type[BaseModel] | None = None) -> list[Any]:
    """pydantic's errors in the API's words: where (a JSON path, no class or union tag
    names) and what is wrong, with the value sent."""
    return [
        {
            "loc": (loc := _api_loc(e.get("loc", ()))),
            "msg": _message(e, loc, model),
            "type": e["type"],
        }
        for e in errors
    ]


def _api_loc(loc: Sequence[Any]) -> list[Any]:
    # ["strategies", 1, "spec", "n_init"] -> ["strategies", 1, "n_init"]: the tag names
    # which branch of the strategy union pydantic tried, nothing the client sent.
    parts = list(loc)
    if len(parts) > 2 and parts[0] == "strategies" and parts[2] in STRATEGY_TAGS:
        del parts[2]
    return parts


def _shown(value: Any) -> str:
    if isinstance(value, OversizedInteger):
        return f"an integer of {value.digits} digits"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37]) + "..."
    text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=repr).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def _choices(expected: str) -> str:
    # pydantic's "'a', 'b' or 'c'" -> "'a', 'b', 'c'"
    return expected.replace(" or ", ", ")


def _message(error: Any, loc: list[Any], model: type[BaseModel] | None) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    got = f" (got {_shown(value)})"
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if kind == "literal_error":
        what = "strategy" if loc[:1] == ["strategies"] else field or "value"
        return f"unknown {what} {_shown(value)}; use one of {_choices(ctx['expected'])}"
    if kind == "extra_forbidden":
        known = _fields(model, loc)
        listed = f"; the fields are {', '.join(known)}" if known else ""
        return f"unknown field{listed}"
    if kind == "missing":
        return "required"
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        sign, key = bounds[kind]
        return f"must be {sign} {ctx[key]}{got}"
    types = {
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "an integer",
        "float_type": "a number",
        "float_parsing": "a number",
        "finite_number": "a finite number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "string_type": "a string",
        "list_type": "an array",
        "dict_type": "an object",
        "model_type": "an object",
        "model_attributes_type": "an object",
    }
    if kind in types:
        if isinstance(value, OversizedInteger):
            return f"must be {types[kind]} of at most {sys.get_int_max_str_digits()} digits{got}"
        return f"must be {types[kind]}{got}"
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} item(s)"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} item(s)"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters long"
    message = str(error["msg"]).removeprefix("Value error, ")
    if isinstance(value, OversizedInteger):
        return f"{message}{got}"
    return message


def _fields(model: type[BaseModel] | None, loc: list[Any]) -> list[str]:
    """The fields allowed where an unknown one was found."""
    if model is None:
        return []
    if len(loc) == 1:
        return list(model.model_fields)
    if loc[:1] == ["strategies"] and len(loc) == 3:
        return list(StrategySpec.model_fields)
    return []


def store_inline(
    datasets: DatasetStore, X: Any, y: Any, limits: DataLimits, pooled: bool = True
) -> DatasetInfo:
    """Validate inline data and store it as an inline dataset.

    ``pooled`` (no tenants): keep all inline data in its bound here, least recently used
    out first. With tenants each tenant's is bounded on its own, by its claims.
    """
    X_arr = as_feature_matrix(X)
    check_cells(X_arr.shape, limits.max_cells)
    check_stored_bytes(X_arr.shape, X_arr.dtype.itemsize, label_bytes(y), limits.max_dataset_bytes)
    y_arr = None if y is None else as_labels(y, X_arr.shape[0])
    info, created = datasets.put(X_arr, y_arr, name=None, format="json", inline=True)
    if created and pooled:
        datasets.prune_inline(limits.inline_max_bytes, keep=info.id)
    return info


def benchmark_body_in_worker(
    body_path: Path, datasets_root: Path, limits: DataLimits, pooled: bool = True
) -> tuple[BenchmarkRequest, DatasetInfo | None]:
    """A large benchmark body, read from a file in a worker: the request without its
    data, and the stored dataset when the data came inline."""
    return request_body_in_worker(BenchmarkRequest, body_path, datasets_root, limits, pooled)


def predict_in_worker(body: bytes | Path, model: FittedModel, max_distances: int) -> bytes:
    """The JSON answer to a predict request: labels and distances for its samples.

    ``body`` is the request's bytes, or the file they were spilled to. Refuses (413) a
    request whose samples times the model's clusters pass ``max_distances``.
    """
    request = validate(PredictRequest, _read(body))
    labels, distances = model.predict(_samples(request.X, model, max_distances))
    answer = Prediction.model_validate({"labels": labels.tolist(), "distances": distances.tolist()})
    return answer.model_dump_json().encode()


def anomalies_in_worker(body: bytes | Path, model: FittedModel, max_distances: int) -> bytes:
    """The JSON answer to an anomalies request: each sample's label and distance, and
    whether that distance passes the model's threshold for the request's contamination.

    Bounded as :func:`predict_in_worker` is.
    """
    request = validate(AnomaliesRequest, _read(body))
    labels, distances = model.predict(_samples(request.X, model, max_distances))
    threshold = model.threshold(request.contamination)
    rows = [
        {"label": label, "distance": distance, "is_anomaly": distance > threshold}
        for label, distance in zip(labels.tolist(), distances.tolist(), strict=True)
    ]
    # The Anomalies model's JSON, written by orjson: a million rows took 2.6 s through the
    # model (4.5 s built unvalidated) where this takes 0.34 s. The bytes are the model's,
    # to the byte: tests/api/test_model_export.py::test_anomalies_answer_is_its_models_json.
    return orjson.dumps({"threshold": threshold, "rows": rows})


def _read(body: bytes | Path) -> bytes:
    return body if isinstance(body, bytes) else body.read_bytes()


def _samples(X: Any, model: FittedModel, max_distances: int) -> np.ndarray:
    """``X`` as a matrix, refused (413) when its samples times the model's clusters pass
    ``max_distances``."""
    # A table's rows are bounded before they are encoded: one-hot encoding makes each
    # as wide as the model's encoded features.
    encoded = model.preprocessing is not None and isinstance(X, list)
    if encoded and len(X) * model.n_features > max_distances:
        raise PayloadTooLargeError(
            f"{len(X)} samples, one-hot encoded to {model.n_features} features, pass the "
            f"limit of {max_distances} values (CLUSTERBENCH_PREDICT_MAX_DISTANCES); send "
            "the samples in smaller batches",
            errors=[{"loc": ["X"], "msg": "too many samples"}],
        )
    samples = model.rows(X)
    if samples.shape[0] * model.n_clusters > max_distances:
        raise PayloadTooLargeError(
            f"{samples.shape[0]} samples against a model of {model.n_clusters} clusters is "
            f"{samples.shape[0] * model.n_clusters} distances, more than the limit of "
            f"{max_distances} (CLUSTERBENCH_PREDICT_MAX_DISTANCES); send the samples in "
            "smaller batches",
            errors=[{"loc": ["X"], "msg": f"at most {max_distances // model.n_clusters} samples"}],
        )
    return samples


def request_body_in_worker(
    model: type[M], body_path: Path, datasets_root: Path, limits: DataLimits, pooled: bool = True
) -> tuple[M, DatasetInfo | None]:
    """A large body of any request with data fields (``X``, ``y``), read in a worker:
    the request without its data, and the stored dataset when the data came inline."""
    request = validate(model, body_path.read_bytes())
    datasets = DatasetStore(datasets_root)
    X, y = getattr(request, "X", None), getattr(request, "y", None)
    if X is None:
        if isinstance(request, BenchmarkRequest):
            name = request.dataset or "digits"
            # A stored dataset is not looked at before the API process has said the caller
            # may use it: its shape would tell whether someone else uploaded it.
            named = datasets.builtin(name) if name in BUILTIN_LOADERS else None
            check_centers_fit(request, named)
        return request, None
    info = store_inline(datasets, X, y, limits, pooled)
    if isinstance(request, BenchmarkRequest):
        check_centers_fit(request, info)
    return request.model_copy(update={"X": None, "y": None}), info


# Centre values a large body may carry back to the API process before its data's shape
# is known there (8 MB of floats): far more than any n_clusters x n_features of a fit.
MAX_UNCHECKED_CENTRE_VALUES = 1 << 20


def check_centers_fit(request: BenchmarkRequest, dataset: DatasetInfo | None) -> None:
    """Custom centres against the data: ``n_clusters`` rows of as many values as the
    estimator's features (a table's encoded width).

    Checked in the worker that decoded a large body, before the request travels back:
    sent back and unpickled, millions of centre rows filled the API process (two such
    bodies took it from 331 to 3,429 MiB, and /healthz timed out). ``dataset`` None (a
    stored dataset, not looked at here): ``n_clusters`` rows when the request says
    ``n_clusters``, and at most MAX_UNCHECKED_CENTRE_VALUES values in any case; the API
    process checks the shape once the caller may use the data.
    """
    for index, strategy in enumerate(request.strategies):
        if not (isinstance(strategy, StrategySpec) and strategy.centers is not None):
            continue
        if dataset is not None:
            n_clusters = bm.default_n_clusters(request.n_clusters, dataset.n_labels)
            width = dataset.fit_shape(request.missing)[1]
            bm.check_centers(strategy.centers, index, n_clusters, width)
            continue
        rows = len(strategy.centers)
        values = sum(len(row) for row in strategy.centers)
        where = f"strategies[{index}].centers"
        if request.n_clusters is not None and rows != request.n_clusters:
            raise InvalidCentersError(
                f"{where}: expected {request.n_clusters} rows (n_clusters), got {rows}",
                errors=[{"loc": ["strategies", index, "centers"], "msg": "wrong row count"}],
            )
        if values > MAX_UNCHECKED_CENTRE_VALUES:
            raise InvalidCentersError(
                f"{where}: {values} values, more than {MAX_UNCHECKED_CENTRE_VALUES} "
                "(n_clusters rows of n_features values are expected)",
                errors=[{"loc": ["strategies", index, "centers"], "msg": "too many values"}],
            )
