"""``clusterbench``: the service from a shell.

    clusterbench serve                          # the server, as `python -m service`
    clusterbench run --init k-means++ random    # the seed's table for digits
    clusterbench run --dataset data.csv         # upload a file, then benchmark it
    clusterbench sweep --dataset iris --k 2 6   # choose k
    clusterbench stability --dataset iris --seeds 5
    clusterbench upload data.csv --label-column species
    clusterbench plot ID -o plot.png
    clusterbench export MODEL_ID -o model.onnx  # the fitted pipeline, for onnxruntime
    clusterbench anomalies MODEL_ID rows.csv    # rows far from their centre
    clusterbench profiles MODEL_ID              # cluster sizes, means and stds
    clusterbench report ID -o report.html
    clusterbench list benchmarks | datasets | jobs
    clusterbench jobs follow ID | cancel ID
    clusterbench models get ID | predict ID '[[...]]'
    clusterbench delete benchmark ID | dataset ID

A benchmark's, sweep's and stability run's flags are its request model's fields
(:mod:`service.schemas`): ``--n-clusters``, ``--n-init``... Every command prints a table,
or JSON with ``--json``.

``--url`` defaults to ``$CLUSTERBENCH_URL`` (else http://127.0.0.1:8000) and ``--api-key``
to ``$CLUSTERBENCH_API_KEY``. A problem the service answers, or a service that cannot be
reached, is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from pydantic import BaseModel, TypeAdapter, ValidationError
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from service import __version__
from service.client import (
    BENCHMARK,
    DEFAULT_URL,
    KINDS,
    MEDIA_TYPES,
    STABILITY,
    SWEEP,
    Client,
    ClusterbenchError,
    Job,
    Kind,
)
from service.report import profile_table
from service.schemas import JobState, StrategySpec

PROG = "clusterbench"


class CommandError(Exception):
    """Something the user can fix, said in one line."""


class JobProgressBar:
    """A progress bar on stderr, shown from a job's first progress report to its end."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None

    def __call__(self, job: Job) -> None:
        description = job.progress.stage or job.state
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task(description, total=job.progress.total)
        self._progress.update(
            self._task,
            completed=job.progress.done,
            total=job.progress.total,
            description=description,
        )

    def __enter__(self) -> JobProgressBar:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._progress.stop()


def _note(text: str) -> None:
    """A line for the person at the terminal, on stderr, away from the output."""
    print(text, file=sys.stderr, flush=True)


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, api_key=args.api_key)


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


# -- output --------------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        sys.stdout.write(value.model_dump_json(indent=2) + "\n")
    else:
        data = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def _print_table(rows: Iterable[BaseModel | dict[str, Any]], columns: Sequence[str]) -> None:
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


def _warnings(result: Any) -> None:
    for warning in result.warnings:
        _note(f"warning: {warning}")
    for strategy in result.results:
        for warning in strategy.warnings:
            _note(f"warning: {getattr(strategy, 'init', '')}: {warning}")


# -- commands ------------------------------------------------------------------------------


def _data_file(value: str) -> Path | None:
    """``value`` as a data file to upload, or None when it names a dataset (name or id)."""
    path = Path(value)
    if path.is_file():
        return path
    if path.suffix.lower() in MEDIA_TYPES or os.sep in value:
        raise CommandError(f"no such file: {value}")
    return None


def _upload(
    client: Client,
    path: Path,
    label_column: str | None,
    name: str | None,
    categorical: str | None = None,
    weight_column: str | None = None,
) -> Any:
    try:
        return client.upload(
            path,
            label_column=label_column,
            name=name,
            categorical=categorical,
            weight_column=weight_column,
        )
    except ValueError as exc:  # an extension that names no format
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None


def _shape(info: Any) -> str:
    labels = "with labels" if info.has_labels else "no labels"
    return f"{info.n_samples} samples, {info.n_features} features, {labels}"


def _dataset(client: Client, args: argparse.Namespace) -> str | None:
    """The dataset to ask about: a file given is uploaded first."""
    dataset: str | None = args.dataset
    if dataset is None:
        return None
    path = _data_file(dataset)
    if path is None:
        return dataset
    info = _upload(client, path, args.label_column, None)
    _note(f"dataset {info.id}: {_shape(info)}")
    return str(info.id)


def _ask(args: argparse.Namespace, kind: Kind) -> Any:
    fields = request_fields(args, kind)
    with _client(args) as client:
        dataset = _dataset(client, args)
        with JobProgressBar(Console(stderr=True)) as bar:
            ask = getattr(client, kind.name)
            result = ask(dataset, progress=bar, **fields)
        table = None if args.json or kind is SWEEP else client.table(result.id, kind.name)
    if table is None:
        if args.json:
            _print_json(result)
    else:
        sys.stdout.write(table)
        sys.stdout.flush()
    _warnings(result)
    return result


def run(args: argparse.Namespace) -> int:
    """Run a benchmark and print its table as scikit-learn's example does."""
    result = _ask(args, BENCHMARK)
    _note(f"benchmark {result.id}; its plot: {PROG} plot {result.id} -o plot.png")
    return 0


SWEEP_COLUMNS = ("k", "init", "inertia", "silhouette", "davies_bouldin", "calinski_harabasz")


def sweep(args: argparse.Namespace) -> int:
    """Run a sweep over k; print each (k, strategy) and the k each criterion recommends."""
    result = _ask(args, SWEEP)
    if not args.json:
        _print_table(result.results, SWEEP_COLUMNS)
        rows = [
            {"strategy": strategy, **picked.model_dump()}
            for strategy, picked in result.recommended_k_by_strategy.items()
        ]
        _print_table(rows, ("strategy", *type(result.recommended_k).model_fields))
    _note(f"sweep {result.id}; its plot: {PROG} plot {result.id} --sweep -o sweep.png")
    return 0


def stability(args: argparse.Namespace) -> int:
    """Run a benchmark under several seeds and print each strategy's spread."""
    result = _ask(args, STABILITY)
    _note(f"stability run {result.id}")
    return 0


def upload(args: argparse.Namespace) -> int:
    """Upload a data file; print its dataset id and shape."""
    path = Path(args.file)
    if not path.is_file():
        raise CommandError(f"no such file: {args.file}")
    with _client(args) as client:
        info = _upload(
            client, path, args.label_column, args.name, args.categorical, args.weight_column
        )
    if args.json:
        _print_json(info)
    else:
        print(f"{info.id}\t{_shape(info)}")
    return 0


def _write(data: bytes, output: str) -> None:
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        Path(output).write_bytes(data)
    except OSError as exc:
        raise CommandError(f"cannot write {output}: {exc.strerror or exc}") from None
    _note(f"wrote {output} ({len(data)} bytes)")


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells as aligned, tab-free text: numbers right, the first column left."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        + "\n"
        for row in rows
    )


def export(args: argparse.Namespace) -> int:
    """Save a model's whole pipeline as ONNX, to score with onnxruntime anywhere."""
    with _client(args) as client:
        onnx = client.export(args.id)
    _write(onnx, args.output or f"{args.id}.onnx")
    return 0


def anomalies(args: argparse.Namespace) -> int:
    """Print each row of a CSV file of samples with its cluster, distance and flag."""
    try:
        X = np.loadtxt(args.file, delimiter=",", ndmin=2, skiprows=args.skip_header)
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CommandError(f"{args.file} is not a CSV file of numbers: {exc}") from None
    with _client(args) as client:
        answer = client.anomalies(args.id, X, contamination=args.contamination)
    rows = [["row", "label", "distance", "anomaly"]] + [
        [str(i), str(r.label), f"{r.distance:.4g}", "yes" if r.is_anomaly else "no"]
        for i, r in enumerate(answer.rows)
    ]
    sys.stdout.write(_table(rows))
    flagged = sum(r.is_anomaly for r in answer.rows)
    _note(f"threshold {answer.threshold:.6g}: {flagged} of {len(answer.rows)} rows flagged")
    return 0


def profiles(args: argparse.Namespace) -> int:
    """Print a model's cluster profiles: sizes, and each feature's mean ± std."""
    with _client(args) as client:
        model = client.model(args.id)
    if model.clusters is None:
        raise CommandError(f"model {args.id} was stored without its cluster profiles")
    sys.stdout.write(_table(profile_table([c.model_dump() for c in model.clusters])))
    return 0


def plot(args: argparse.Namespace) -> int:
    """Save a benchmark's decision-boundary plot, or a sweep's scores against k, as PNG."""
    if args.sweep and args.init:
        raise CommandError("--init draws one strategy of a benchmark, not of a sweep (--sweep)")
    with _client(args) as client:
        png = client.plot(args.id, init=args.init, kind="sweep" if args.sweep else "benchmark")
    _write(png, args.output)
    return 0


def report(args: argparse.Namespace) -> int:
    """Save a result as one self-contained HTML page."""
    with _client(args) as client:
        page = client.report(args.id, kind=args.kind)
    _write(page.encode(), args.output)
    return 0


BENCHMARK_COLUMNS = ("id", "dataset.name", "n_clusters", "strategies", "created_at")
DATASET_COLUMNS = ("id", "name", "format", "n_samples", "n_features", "has_labels")
JOB_COLUMNS = ("id", "kind", "state", "progress.done", "progress.total", "result_url")


def list_(args: argparse.Namespace) -> int:
    """List the stored benchmarks, the datasets or the jobs."""
    with _client(args) as client:
        columns: Sequence[str]
        if args.what == "benchmarks":
            rows: list[Any] = client.benchmarks(limit=args.limit)
            columns = BENCHMARK_COLUMNS
        elif args.what == "datasets":
            rows, columns = client.datasets(), DATASET_COLUMNS
        else:
            rows, columns = client.jobs(state=args.state, limit=args.limit), JOB_COLUMNS
    if args.json:
        _print_json(rows)
    else:
        _print_table(rows, columns)
    return 0


def delete(args: argparse.Namespace) -> int:
    """Delete a benchmark (with its models and plots) or a dataset."""
    with _client(args) as client:
        client.delete(args.what, args.id)
    _note(f"deleted {args.what} {args.id}")
    return 0


def jobs(args: argparse.Namespace) -> int:
    """Follow a job to its end (a progress bar), or cancel it."""
    with _client(args) as client:
        if args.action == "cancel":
            job = client.cancel_job(args.id)
            if args.json:
                _print_json(job)
            else:
                _print_table([job], JOB_COLUMNS)
            return 0
        with JobProgressBar(Console(stderr=True)) as bar:
            result = client.follow(args.id, progress=bar)
    if args.json:
        _print_json(result)
    else:
        print(f"{result.id}\t{type(result).__name__}")
    return 0


def models(args: argparse.Namespace) -> int:
    """A fitted model, or the clusters of new samples under it."""
    with _client(args) as client:
        if args.action == "get":
            model = client.model(args.id)
            if args.json:
                _print_json(model)
            else:
                _print_table([model], ("model_id", "init", "n_clusters", "n_features", "inertia"))
            return 0
        text = sys.stdin.read() if args.rows == "-" else args.rows
        try:
            rows = json.loads(text)
        except ValueError:
            raise CommandError("ROWS: give the samples as JSON, e.g. '[[1.0, 2.0]]'") from None
        prediction = client.predict(args.id, rows)
    if args.json:
        _print_json(prediction)
    else:
        pairs = zip(prediction.labels, prediction.distances, strict=True)
        _print_table([{"label": k, "distance": d} for k, d in pairs], ("label", "distance"))
    return 0


SERVE_SETTINGS = {
    "host": "CLUSTERBENCH_HOST",
    "port": "CLUSTERBENCH_PORT",
    "workers": "CLUSTERBENCH_WORKERS",
    "data_dir": "CLUSTERBENCH_DATA_DIR",
    "log_level": "CLUSTERBENCH_LOG_LEVEL",
}


def serve(args: argparse.Namespace) -> int:
    """Serve the API, exactly as ``python -m service`` does, with these settings."""
    for name, variable in SERVE_SETTINGS.items():
        value = getattr(args, name)
        if value is not None:
            os.environ[variable] = str(value)
    from service import __main__ as server

    entry: Callable[..., Any] = server.main
    # A `main(argv)` that reads its own flags must not read ours: the settings are in the
    # environment already, which it reads as `python -m service` would.
    outcome = entry([]) if inspect.signature(entry).parameters else entry()
    return outcome if isinstance(outcome, int) else 0


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0 to 65535)")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def _remote() -> argparse.ArgumentParser:
    """The flags of every command that talks to a service."""
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--url",
        default=os.environ.get("CLUSTERBENCH_URL") or DEFAULT_URL,
        help=f"where the service is (default: $CLUSTERBENCH_URL, else {DEFAULT_URL})",
    )
    remote.add_argument(
        "--api-key",
        default=os.environ.get("CLUSTERBENCH_API_KEY"),
        metavar="KEY",
        help="sent as 'Authorization: Bearer KEY' (default: $CLUSTERBENCH_API_KEY)",
    )
    remote.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return remote


def _add_question(
    commands: Any, remote: argparse.ArgumentParser, kind: Kind, name: str, help: str
) -> argparse.ArgumentParser:
    """A command asking ``kind``: the data flags, then the request model's fields."""
    parser: argparse.ArgumentParser = commands.add_parser(name, parents=[remote], help=help)
    parser.add_argument(
        "--dataset",
        default="digits" if kind is BENCHMARK else None,
        metavar="NAME|ID|FILE",
        help="a built-in dataset (digits, iris, wine, breast_cancer), an uploaded dataset's "
        f"id, or a data file to upload first ({', '.join(MEDIA_TYPES)}); default digits",
    )
    parser.add_argument(
        "--label-column",
        metavar="NAME",
        help="for a CSV or Parquet file: the column holding the labels",
    )
    add_request_flags(parser, kind.request)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="scikit-learn's K-Means digits benchmark as a service: run benchmarks, "
        "sweeps and stability runs, upload data, save plots and reports, or serve the API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    remote = _remote()

    _add_question(
        commands, remote, BENCHMARK, "run", "run a benchmark and print its table"
    ).set_defaults(handler=run)
    _add_question(
        commands, remote, SWEEP, "sweep", "choose k: scores against k, the k recommended"
    ).set_defaults(handler=sweep)
    _add_question(
        commands, remote, STABILITY, "stability", "a benchmark under several seeds"
    ).set_defaults(handler=stability)

    upload_parser = commands.add_parser(
        "upload", parents=[remote], help="upload a data file; print its id and shape"
    )
    upload_parser.add_argument("file", metavar="FILE", help=", ".join(MEDIA_TYPES))
    upload_parser.add_argument(
        "--label-column",
        metavar="NAME",
        help="for a CSV or Parquet file: the column holding the labels",
    )
    upload_parser.add_argument(
        "--categorical",
        metavar="NAMES",
        help="for a CSV or Parquet file: columns (comma-separated) to treat as categories "
        "whatever they hold; one-hot encoded when fitted",
    )
    upload_parser.add_argument(
        "--weight-column",
        metavar="NAME",
        help="for a CSV or Parquet file: the column holding each row's sample_weight",
    )
    upload_parser.add_argument(
        "--name", help="the dataset's name (default: the file's name; '' for none)"
    )
    upload_parser.set_defaults(handler=upload)

    plot_parser = commands.add_parser(
        "plot", parents=[remote], help="save a benchmark's or a sweep's plot"
    )
    plot_parser.add_argument("id", metavar="ID", help="the benchmark's (or sweep's) id")
    plot_parser.add_argument(
        "-o", "--output", default="plot.png", help="PNG file to write, - for stdout"
    )
    plot_parser.add_argument("--init", metavar="NAME", help="only this strategy's panel")
    plot_parser.add_argument("--sweep", action="store_true", help="ID is a sweep's")
    plot_parser.set_defaults(handler=plot)

    export_parser = commands.add_parser(
        "export", parents=[remote], help="save a model as ONNX, for onnxruntime anywhere"
    )
    export_parser.add_argument("id", metavar="ID", help="the model's id")
    export_parser.add_argument(
        "-o", "--output", help="ONNX file to write (default ID.onnx), - for stdout"
    )
    export_parser.set_defaults(handler=export)

    anomalies_parser = commands.add_parser(
        "anomalies", parents=[remote], help="flag the rows of a CSV file far from their centre"
    )
    anomalies_parser.add_argument("id", metavar="ID", help="the model's id")
    anomalies_parser.add_argument("file", metavar="FILE", help="a CSV file of numbers")
    anomalies_parser.add_argument(
        "--contamination",
        type=float,
        default=0.01,
        metavar="SHARE",
        help="share of the training rows to call anomalous, in (0, 0.5) (default 0.01)",
    )
    anomalies_parser.add_argument(
        "--skip-header", action="store_const", const=1, default=0, help="FILE has a header line"
    )
    anomalies_parser.set_defaults(handler=anomalies)

    profiles_parser = commands.add_parser(
        "profiles", parents=[remote], help="print a model's cluster sizes, means and stds"
    )
    profiles_parser.add_argument("id", metavar="ID", help="the model's id")
    profiles_parser.set_defaults(handler=profiles)

    report_parser = commands.add_parser(
        "report", parents=[remote], help="save a result as a self-contained HTML page"
    )
    report_parser.add_argument("id", metavar="ID")
    report_parser.add_argument("--kind", choices=list(KINDS), default=BENCHMARK.name)
    report_parser.add_argument(
        "-o", "--output", default="report.html", help="HTML file to write, - for stdout"
    )
    report_parser.set_defaults(handler=report)

    list_parser = commands.add_parser(
        "list", parents=[remote], help="list the stored benchmarks, the datasets or the jobs"
    )
    list_parser.add_argument("what", choices=["benchmarks", "datasets", "jobs"])
    list_parser.add_argument("--limit", type=_positive, default=20, metavar="N")
    list_parser.add_argument("--state", choices=[state.value for state in JobState])
    list_parser.set_defaults(handler=list_)

    delete_parser = commands.add_parser(
        "delete", parents=[remote], help="delete a benchmark or a dataset"
    )
    delete_parser.add_argument("what", choices=["benchmark", "dataset"])
    delete_parser.add_argument("id", metavar="ID")
    delete_parser.set_defaults(handler=delete)

    jobs_parser = commands.add_parser("jobs", help="follow or cancel a job")
    jobs_actions = jobs_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("follow", "follow a job to its end"), ("cancel", "cancel a job")):
        action_parser = jobs_actions.add_parser(action, parents=[remote], help=text)
        action_parser.add_argument("id", metavar="ID", help="the job's id")
    jobs_parser.set_defaults(handler=jobs)

    models_parser = commands.add_parser("models", help="fitted models: get, predict")
    model_actions = models_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    get_parser = model_actions.add_parser("get", parents=[remote], help="a model's centres")
    get_parser.add_argument("id", metavar="ID", help="a model id from a benchmark")
    predict_parser = model_actions.add_parser(
        "predict", parents=[remote], help="the clusters of new samples"
    )
    predict_parser.add_argument("id", metavar="ID", help="a model id from a benchmark")
    predict_parser.add_argument("rows", metavar="ROWS", help="samples as JSON, - for stdin")
    models_parser.set_defaults(handler=models)

    from service.__main__ import LOG_LEVELS

    serve_parser = commands.add_parser(
        "serve", help="serve the API (as `python -m service`; CLUSTERBENCH_* settings apply)"
    )
    serve_parser.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve_parser.add_argument("--port", type=_port, help="TCP port (default 8000)")
    serve_parser.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help="processes computing benchmarks (default: CPUs)",
    )
    serve_parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where results and uploads are kept (default ./.clusterbench)",
    )
    serve_parser.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    serve_parser.set_defaults(handler=serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``clusterbench`` console command; returns its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ClusterbenchError as error:
        detail = name_flags(error.detail)
        message = detail if error.status is None else f"{detail} ({error.status})"
    except CommandError as error:
        message = str(error)
    except KeyboardInterrupt:
        return 130
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
