"""The ``clusterbench`` command line: its commands, their flags and help."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from typing import Any

from service import __version__
from service.cli_flags import add_request_flags
from service.client import BENCHMARK, DEFAULT_URL, KINDS, MEDIA_TYPES, STABILITY, SWEEP, Kind
from service.schemas import JobState

PROG = "clusterbench"
Handler = Callable[[argparse.Namespace], int]


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


def build_parser(handlers: Mapping[str, Handler]) -> argparse.ArgumentParser:
    """The ``clusterbench`` command line, each command calling its ``handlers`` entry."""
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
    ).set_defaults(handler=handlers["run"])
    _add_question(
        commands, remote, SWEEP, "sweep", "choose k: scores against k, the k recommended"
    ).set_defaults(handler=handlers["sweep"])
    _add_question(
        commands, remote, STABILITY, "stability", "a benchmark under several seeds"
    ).set_defaults(handler=handlers["stability"])

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
    upload_parser.set_defaults(handler=handlers["upload"])

    plot_parser = commands.add_parser(
        "plot", parents=[remote], help="save a benchmark's or a sweep's plot"
    )
    plot_parser.add_argument("id", metavar="ID", help="the benchmark's (or sweep's) id")
    plot_parser.add_argument(
        "-o", "--output", default="plot.png", help="PNG file to write, - for stdout"
    )
    plot_parser.add_argument("--init", metavar="NAME", help="only this strategy's panel")
    plot_parser.add_argument("--sweep", action="store_true", help="ID is a sweep's")
    plot_parser.set_defaults(handler=handlers["plot"])

    export_parser = commands.add_parser(
        "export", parents=[remote], help="save a model as ONNX, for onnxruntime anywhere"
    )
    export_parser.add_argument("id", metavar="ID", help="the model's id")
    export_parser.add_argument(
        "-o", "--output", help="ONNX file to write (default ID.onnx), - for stdout"
    )
    export_parser.set_defaults(handler=handlers["export"])

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
    anomalies_parser.set_defaults(handler=handlers["anomalies"])

    profiles_parser = commands.add_parser(
        "profiles", parents=[remote], help="print a model's cluster sizes, means and stds"
    )
    profiles_parser.add_argument("id", metavar="ID", help="the model's id")
    profiles_parser.set_defaults(handler=handlers["profiles"])

    report_parser = commands.add_parser(
        "report", parents=[remote], help="save a result as a self-contained HTML page"
    )
    report_parser.add_argument("id", metavar="ID")
    report_parser.add_argument("--kind", choices=list(KINDS), default=BENCHMARK.name)
    report_parser.add_argument(
        "-o", "--output", default="report.html", help="HTML file to write, - for stdout"
    )
    report_parser.set_defaults(handler=handlers["report"])

    list_parser = commands.add_parser(
        "list", parents=[remote], help="list the stored benchmarks, the datasets or the jobs"
    )
    list_parser.add_argument("what", choices=["benchmarks", "datasets", "jobs"])
    list_parser.add_argument("--limit", type=_positive, default=20, metavar="N")
    list_parser.add_argument("--state", choices=[state.value for state in JobState])
    list_parser.set_defaults(handler=handlers["list_"])

    delete_parser = commands.add_parser(
        "delete", parents=[remote], help="delete a benchmark or a dataset"
    )
    delete_parser.add_argument("what", choices=["benchmark", "dataset"])
    delete_parser.add_argument("id", metavar="ID")
    delete_parser.set_defaults(handler=handlers["delete"])

    jobs_parser = commands.add_parser("jobs", help="follow or cancel a job")
    jobs_actions = jobs_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("follow", "follow a job to its end"), ("cancel", "cancel a job")):
        action_parser = jobs_actions.add_parser(action, parents=[remote], help=text)
        action_parser.add_argument("id", metavar="ID", help="the job's id")
    jobs_parser.set_defaults(handler=handlers["jobs"])

    models_parser = commands.add_parser("models", help="fitted models: get, predict")
    model_actions = models_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    get_parser = model_actions.add_parser("get", parents=[remote], help="a model's centres")
    get_parser.add_argument("id", metavar="ID", help="a model id from a benchmark")
    predict_parser = model_actions.add_parser(
        "predict", parents=[remote], help="the clusters of new samples"
    )
    predict_parser.add_argument("id", metavar="ID", help="a model id from a benchmark")
    predict_parser.add_argument("rows", metavar="ROWS", help="samples as JSON, - for stdin")
    models_parser.set_defaults(handler=handlers["models"])

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
    serve_parser.set_defaults(handler=handlers["serve"])
    return parser
