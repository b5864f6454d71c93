"""What ``clusterbench`` prints: tables (rich) or JSON, and the warnings of an answer."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Table


def note(text: str) -> None:
    """A line for the person at the terminal, on stderr, away from the output."""
    print(text, file=sys.stderr, flush=True)


# -- output --------------------------------------------------------------------------------


def print_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        sys.stdout.write(value.model_dump_json(indent=2) + "\n")
    else:
        data = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def print_table(rows: Iterable[BaseModel | dict[str, Any]], columns: Sequence[str]) -> None:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        data = row.model_dump(mode="json") if isinstance(row, BaseModel) else row
        table.add_row(*(_cell(_lookup(data, column)) for column in columns))
    console = Console(width=200)
    with console.capture() as captured:
        console.print(table)
    # Without rich's padding at the ends of lines, so the output diffs and pastes cleanly.
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    sys.stdout.flush()


def print_record(record: BaseModel, columns: Sequence[str], *, as_json: bool) -> None:
    """One record: its JSON object with ``as_json``, else a table of one row."""
    if as_json:
        print_json(record)
    else:
        print_table([record], columns)


def _lookup(data: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        data = data.get(part) if isinstance(data, dict) else None  # type: ignore[assignment]
    return data


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def print_warnings(result: Any) -> None:
    for warning in result.warnings:
        note(f"warning: {warning}")
    for strategy in result.results:
        for warning in strategy.warnings:
            note(f"warning: {getattr(strategy, 'init', '')}: {warning}")
