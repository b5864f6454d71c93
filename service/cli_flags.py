"""A request model's fields as ``clusterbench`` flags, and the flags back as the request's
fields: each field once, from the model (:mod:`service.schemas`)."""

from __future__ import annotations

import argparse
import json
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from service.client import (
    KINDS,
    Kind,
)
from service.schemas import StrategySpec


class CommandError(Exception):
    """Something the user can fix, said in one line."""


# -- a request model's fields as flags -----------------------------------------------------

# Fields the command names otherwise: the data is `--dataset NAME|ID|FILE`; inline arrays
# belong to the Python client.
DATA_FIELDS = frozenset({"dataset", "X", "y"})
# Older or shorter names a flag is also known by.
ALIASES = {"strategies": ["--init"]}
# A strategy's own fields (`n_init`, `centers`) are flags too, applied to each strategy.
SPEC_FIELDS = [name for name in StrategySpec.model_fields if name != "init"]
FIXED_CENTRES = ("pca", "custom")  # they start from fixed centres: n_init is 1 there


def flag_of(field: str) -> str:
    """The command's flag for a request field: ``n_clusters`` -> ``--n-clusters``."""
    return "--" + field.replace("_", "-")


def _args(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _args(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return tuple(a for arg in typing.get_args(annotation) for a in _args(arg))
    return (annotation,)


def _takes_list(annotation: Any) -> bool:
    return any(typing.get_origin(arg) is list for arg in _args(annotation))


def _metavar(annotation: Any) -> str:
    kinds = {typing.get_origin(a) or a for a in _args(annotation)} - {type(None)}
    if kinds <= {int}:
        return "N"
    if kinds <= {float, int}:
        return "X"
    if all(typing.get_origin(a) is typing.Literal for a in _args(annotation)):
        return "{" + ",".join(str(v) for a in _args(annotation) for v in typing.get_args(a)) + "}"
    return "VALUE"


def add_request_flags(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """A flag for each field of ``model`` besides the data: a list field takes values,
    a boolean is ``--name``/``--no-name``, a value in JSON (``null``, ``{...}``) is read
    as JSON. Only the flags given are sent: the service applies its defaults."""
    # The fields the contract shows (a stability run's refused `random_state` is not).
    documented = model.model_json_schema()["properties"]
    fields = {**model.model_fields, **{n: StrategySpec.model_fields[n] for n in SPEC_FIELDS}}
    for name, info in fields.items():
        if name in DATA_FIELDS or (name not in documented and name not in SPEC_FIELDS):
            continue
        options: dict[str, Any] = {
            "dest": name,
            "default": argparse.SUPPRESS,
            "help": (info.description or "").replace("%", "%%"),
        }
        if name in SPEC_FIELDS:
            options["help"] = f"each strategy's `{name}`: " + options["help"]
        if info.annotation is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["metavar"] = _metavar(info.annotation)
            if _takes_list(info.annotation) and name not in SPEC_FIELDS:
                options["nargs"] = "+"
        parser.add_argument(flag_of(name), *ALIASES.get(name, []), **options)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def request_fields(args: argparse.Namespace, kind: Kind) -> dict[str, Any]:
    """The fields the flags given set, checked against the request model; a bad value is
    a :class:`CommandError` naming its flag."""
    model = kind.request
    given = {
        name: getattr(args, name)
        for name in [*model.model_fields, *SPEC_FIELDS]
        if hasattr(args, name) and name not in DATA_FIELDS
    }
    fields: dict[str, Any] = {}
    for name, raw in given.items():
        if isinstance(raw, bool):
            fields[name] = raw
        elif isinstance(raw, list):
            values = [_value(item) for item in raw]
            annotation = model.model_fields[name].annotation
            # One value where the field also takes a single one (`--seeds 10`,
            # `--k '{"min": 2, "max": 6}'`): that value, not a list of it.
            fields[name] = values
            if len(values) == 1:
                try:
                    TypeAdapter[Any](annotation or Any).validate_python(values[0])
                except ValidationError:
                    pass
                else:
                    fields[name] = values[0]
        else:
            fields[name] = _value(raw)
    spec = {name: fields.pop(name) for name in SPEC_FIELDS if name in fields}
    if spec:
        fields["strategies"] = _with_spec(fields.get("strategies"), spec, model)
    try:
        model.model_validate(fields)
    except ValidationError as exc:
        raise CommandError(
            "; ".join(_flag_message(error, fields) for error in exc.errors(include_url=False))
        ) from None
    return fields


def _with_spec(
    strategies: list[Any] | None, spec: dict[str, Any], model: type[BaseModel]
) -> list[Any]:
    """``strategies`` (else the model's default) with ``--n-init``/``--centers`` applied."""
    if strategies is None:
        strategies = list(model.model_fields["strategies"].get_default(call_default_factory=True))
    out: list[Any] = []
    for item in strategies:
        entry = {"init": item} if isinstance(item, str) else dict(item)
        if entry["init"] not in FIXED_CENTRES and "n_init" in spec:
            entry["n_init"] = spec["n_init"]
        out.append(entry)
    if "centers" in spec:
        out = [e for e in out if e["init"] != "custom"]
        out.append({"init": "custom", "centers": spec["centers"]})
    return out


def _flag_message(error: Any, fields: dict[str, Any]) -> str:
    loc = [part for part in error["loc"] if part not in ("name", "spec")]
    message = str(error["msg"]).removeprefix("Value error, ")
    if loc and isinstance(loc[0], str) and loc[0] in fields:
        return f"{flag_of(loc[0])}: {message}"
    return name_flags(message)


def name_flags(text: str) -> str:
    """``text`` (a problem's detail) with the request fields it names as the command's
    flags: `n_clusters` -> --n-clusters."""
    names = {n for kind in KINDS.values() for n in kind.request.model_fields} - DATA_FIELDS
    names |= set(SPEC_FIELDS)
    for name in sorted(names, key=len, reverse=True):
        flag = flag_of(name)
        text = text.replace(f"`{name}`", flag)
        if "_" in name:  # unmistakable as a word too
            text = re.sub(rf"(?<![\w-]){re.escape(name)}\b", flag, text)
    return text
