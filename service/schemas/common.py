"""The types every resource's models share: data matrices, labels, warnings, and the
problem and health bodies."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
)

from service.params import (
    StrategyName,
    StrategySpec,
)

# strict: a JSON string such as "1.5" is not a number; NaN and infinity are refused.
# Data matrices are checked and converted by NumPy (service.datasets.as_feature_matrix),
# which names the row and column of a bad value, far faster than per-item validation.
Matrix = Annotated[
    Any,
    WithJsonSchema({"type": "array", "items": {"type": "array", "items": {"type": "number"}}}),
]


# Rows a model predicts: numbers, or a table's raw cells (strings, booleans and nulls) in
# its column order, or objects keyed by column name; checked by the model's preprocessing.
Rows = Annotated[
    Any,
    WithJsonSchema(
        {
            "type": "array",
            "items": {
                "anyOf": [
                    {
                        "type": "array",
                        "items": {"type": ["number", "string", "boolean", "null"]},
                    },
                    {
                        "type": "object",
                        "additionalProperties": {"type": ["number", "string", "boolean", "null"]},
                    },
                ]
            },
        }
    ),
]


def _label(value: object) -> int | str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**63:
            raise ValueError("an integer label must fit in 64 bits")
        return value
    raise ValueError(f"a label must be an integer or a string, not {type(value).__name__}")


Label = Annotated[
    int | str,
    PlainValidator(_label),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}]}),
]


# Request models are strict, as an API for programs should be: "2" is not an integer,
# 1.0 is not an integer and "yes" is not a boolean. A float field still takes a JSON
# integer (``"tol": 0``), which is a number.
STRICT = ConfigDict(extra="forbid", strict=True)


LeftOut = Annotated[
    list[StrategyName],
    Field(
        description="Default strategies left out because they cannot run here (`pca` when "
        "n_clusters > min(n_samples, n_features), or with `bisecting`); `warnings` says why. "
        "A strategy the request names is never left out: it gets 422.",
    ),
]
ResultWarnings = Annotated[
    list[str],
    Field(
        description="What the service left out or skipped, and why (scikit-learn's own "
        "warnings are in each result's `warnings`).",
    ),
]


class Problem(BaseModel):
    """An RFC 9457 problem detail."""

    type: str = Field(examples=["urn:clusterbench:problem:invalid-data"])
    title: str = Field(examples=["Invalid data"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["X is ragged: row 2 has 3 values, row 0 has 2"])
    errors: list[dict[str, Any]] = Field(
        default_factory=list, description="One entry per problem: `loc` (where) and `msg`."
    )


class Scores(BaseModel):
    """The scores of one clustering, null where the data cannot give one (the label
    scores without labels). A model with fields that come before them declares those in a
    second base, ``class Point(Scores, _PointKey)``: pydantic takes the bases' fields
    from the last base to the first, so the answer's keys keep their order."""

    homogeneity: float | None
    completeness: float | None
    v_measure: float | None
    ari: float | None
    ami: float | None
    silhouette: float | None
    davies_bouldin: float | None
    calinski_harabasz: float | None


class Health(BaseModel):
    status: str = Field(examples=["ok"])


def answer_forms(answer: BaseModel) -> tuple[bytes, bytes]:
    """An answer's JSON as first answered (``"cached": false``) and as stored and sent on
    every hit (``"cached": true``): both dumped from the model, once."""
    stored = answer.model_copy(update={"cached": True})
    return (
        answer.model_dump_json(exclude_unset=True).encode(),
        stored.model_dump_json(exclude_unset=True).encode(),
    )


def hit_form(answer_id: str, stored: bytes) -> bytes:
    """Stored answer bytes as a hit sends them: as they are. Stores written before answers
    were stored in their hit form hold the first answer (``"cached": false``, the second
    key after the hex ``id``): such an answer is sent with the one flag turned, the bytes
    it was always sent with."""
    first = b'{"id":"' + answer_id.encode() + b'","cached":false'
    if stored.startswith(first):
        return b'{"id":"' + answer_id.encode() + b'","cached":true' + stored[len(first) :]
    return stored


def check_source(X: object, dataset: str | None, y: object) -> None:
    """A request's data: inline ``X`` or a ``dataset``, not both; ``y`` only with ``X``."""
    if X is not None and dataset is not None:
        raise ValueError("give either `dataset` or inline `X`, not both")
    if y is not None and X is None:
        raise ValueError("`y` labels inline `X`; it cannot be given without `X`")


# Strategies that start from fixed centres: one run is all they can make.
FIXED_CENTRES = ("pca", "custom")


def named_strategies(
    strategies: Iterable[StrategyName | StrategySpec],
) -> Iterator[tuple[str, StrategySpec | None]]:
    """Each strategy's name and its spec (None for a bare name), in order; one named
    twice is refused when it is reached, and so is an ``n_init`` other than 1 for a
    strategy that starts from fixed centres, once the caller has checked the rest."""
    seen: set[str] = set()
    for item in strategies:
        name = item if isinstance(item, str) else item.init
        if name in seen:
            raise ValueError(f"strategy {name!r} is listed twice")
        seen.add(name)
        spec = item if isinstance(item, StrategySpec) else None
        yield name, spec
        if name in FIXED_CENTRES and spec is not None and spec.n_init not in (None, 1):
            raise ValueError(f"strategy {name!r} starts from fixed centres: n_init must be 1")
