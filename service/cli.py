"""``clusterbench``: the service from a shell.

    clusterbench serve                          # the server, as `python -m service`
    clusterbench run --init k-means++ random    # the seed's table for digits
    clusterbench run --dataset data.csv         # upload a file, then benchmark it
    clusterbench upload data.csv --label-column species
    clusterbench plot ID -o plot.png
    clusterbench export MODEL_ID -o model.onnx  # the fitted pipeline, for onnxruntime
    clusterbench anomalies MODEL_ID rows.csv    # rows far from their centre
    clusterbench profiles MODEL_ID              # cluster sizes, means and stds

``--url`` defaults to ``$CLUSTERBENCH_URL`` (else http://127.0.0.1:8000) and ``--api-key``
to ``$CLUSTERBENCH_API_KEY``. A problem the service answers, or a service that cannot be
reached, is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from service import __version__
from service.client import (
    DEFAULT_URL,
    MEDIA_TYPES,
    BenchmarkFields,
    Client,
    ClusterbenchError,
    Job,
)
from service.report import profile_table

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


def _data_file(value: str) -> Path | None:
    """``value`` as a data file to upload, or None when it names a dataset (name or id)."""
    path = Path(value)
    if path.is_file():
        return path
    if path.suffix.lower() in MEDIA_TYPES or os.sep in value:
        raise CommandError(f"no such file: {value}")
    return None


def _upload(client: Client, path: Path, label_column: str | None) -> str:
    try:
        info = client.upload(path, label_column=label_column)
    except ValueError as exc:  # an extension that names no format
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    labels = "with labels" if info.has_labels else "no labels"
    _note(f"dataset {info.id}: {info.n_samples} samples, {info.n_features} features, {labels}")
    return info.id


def run(args: argparse.Namespace) -> int:
    """Run a benchmark and print its table as scikit-learn's example does."""
    fields: BenchmarkFields = {}
    if args.init:
        fields["strategies"] = args.init
    if args.n_clusters is not None:
        fields["n_clusters"] = args.n_clusters
    if args.random_state is not None:
        fields["random_state"] = args.random_state
    with _client(args) as client:
        dataset = args.dataset
        path = _data_file(dataset)
        if path is not None:
            dataset = _upload(client, path, args.label_column)
        with JobProgressBar(Console(stderr=True)) as bar:
            result = client.benchmark(dataset, progress=bar, **fields)
        table = client.table(result.id)
    sys.stdout.write(table)
    sys.stdout.flush()
    for warning in result.warnings:
        _note(f"warning: {warning}")
    for strategy in result.results:
        for warning in strategy.warnings:
            _note(f"warning: {strategy.init}: {warning}")
    _note(f"benchmark {result.id}; its plot: {PROG} plot {result.id} -o plot.png")
    return 0


def upload(args: argparse.Namespace) -> int:
    """Upload a data file; print its dataset id and shape."""
    path = Path(args.file)
    if not path.is_file():
        raise CommandError(f"no such file: {args.file}")
    with _client(args) as client:
        info = client.upload(path, label_column=args.label_column)
    labels = "with labels" if info.has_labels else "no labels"
    print(f"{info.id}\t{info.n_samples} samples, {info.n_features} features, {labels}")
    return 0


def plot(args: argparse.Namespace) -> int:
    """Save a benchmark's decision-boundary plot as PNG."""
    with _client(args) as client:
        png = client.plot(args.id, init=args.init)
    _write(args.output, png)
    return 0


def _write(output: str, data: bytes) -> None:
    """``data`` to the file ``output``, or to stdout for ``-``."""
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
    _write(args.output or f"{args.id}.onnx", onnx)
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


SERVE_SETTINGS = {
    "host": "CLUSTERBENCH_HOST",
    "port": "CLUSTERBENCH_PORT",
    "workers": "CLUSTERBENCH_WORKERS",
    "data_dir": "CLUSTERBENCH_DATA_DIR",
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="scikit-learn's K-Means digits benchmark as a service: run it, upload "
        "data, save plots, or serve the API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    run_parser = commands.add_parser(
        "run", parents=[remote], help="run a benchmark and print its table"
    )
    run_parser.add_argument(
        "--dataset",
        default="digits",
        metavar="NAME|ID|FILE",
        help="a built-in dataset (digits, iris, wine, breast_cancer), an uploaded dataset's "
        f"id, or a data file to upload first ({', '.join(MEDIA_TYPES)}); default digits",
    )
    run_parser.add_argument(
        "--label-column",
        metavar="NAME",
        help="for a CSV or Parquet file: the column holding the labels",
    )
    run_parser.add_argument(
        "--init",
        nargs="+",
        metavar="NAME",
        help="init strategies to compare: k-means++, random, pca (default: all three, "
        "pca left out where it cannot run)",
    )
    run_parser.add_argument(
        "--n-clusters", type=int, metavar="N", help="default: the number of labels"
    )
    run_parser.add_argument("--random-state", type=int, metavar="N", help="default 0")
    run_parser.set_defaults(handler=run)

    upload_parser = commands.add_parser(
        "upload", parents=[remote], help="upload a data file; print its id and shape"
    )
    upload_parser.add_argument("file", metavar="FILE", help=", ".join(MEDIA_TYPES))
    upload_parser.add_argument(
        "--label-column",
        metavar="NAME",
        help="for a CSV or Parquet file: the column holding the labels",
    )
    upload_parser.set_defaults(handler=upload)

    plot_parser = commands.add_parser(
        "plot", parents=[remote], help="save a benchmark's decision-boundary plot"
    )
    plot_parser.add_argument("id", metavar="ID", help="the benchmark's id")
    plot_parser.add_argument(
        "-o", "--output", default="plot.png", help="PNG file to write, - for stdout"
    )
    plot_parser.add_argument("--init", metavar="NAME", help="only this strategy's panel")
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
        message = error.detail if error.status is None else f"{error.detail} ({error.status})"
    except CommandError as error:
        message = str(error)
    except KeyboardInterrupt:
        return 130
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
