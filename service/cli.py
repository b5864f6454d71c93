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

from service import cli_parser
from service.cli_flags import CommandError, name_flags, request_fields
from service.cli_output import note, print_json, print_record, print_table, print_warnings
from service.cli_parser import PROG
from service.client import (
    BENCHMARK,
    MEDIA_TYPES,
    STABILITY,
    SWEEP,
    Client,
    ClusterbenchError,
    Job,
    Kind,
)
from service.report import profile_table


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


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, api_key=args.api_key)


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
    note(f"dataset {info.id}: {_shape(info)}")
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
            print_json(result)
    else:
        sys.stdout.write(table)
        sys.stdout.flush()
    print_warnings(result)
    return result


def run(args: argparse.Namespace) -> int:
    """Run a benchmark and print its table as scikit-learn's example does."""
    result = _ask(args, BENCHMARK)
    note(f"benchmark {result.id}; its plot: {PROG} plot {result.id} -o plot.png")
    return 0


SWEEP_COLUMNS = ("k", "init", "inertia", "silhouette", "davies_bouldin", "calinski_harabasz")


def sweep(args: argparse.Namespace) -> int:
    """Run a sweep over k; print each (k, strategy) and the k each criterion recommends."""
    result = _ask(args, SWEEP)
    if not args.json:
        print_table(result.results, SWEEP_COLUMNS)
        rows = [
            {"strategy": strategy, **picked.model_dump()}
            for strategy, picked in result.recommended_k_by_strategy.items()
        ]
        print_table(rows, ("strategy", *type(result.recommended_k).model_fields))
    note(f"sweep {result.id}; its plot: {PROG} plot {result.id} --sweep -o sweep.png")
    return 0


def stability(args: argparse.Namespace) -> int:
    """Run a benchmark under several seeds and print each strategy's spread."""
    result = _ask(args, STABILITY)
    note(f"stability run {result.id}")
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
        print_json(info)
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
    note(f"wrote {output} ({len(data)} bytes)")


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
    note(f"threshold {answer.threshold:.6g}: {flagged} of {len(answer.rows)} rows flagged")
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
        print_json(rows)
    else:
        print_table(rows, columns)
    return 0


def delete(args: argparse.Namespace) -> int:
    """Delete a benchmark (with its models and plots) or a dataset."""
    with _client(args) as client:
        client.delete(args.what, args.id)
    note(f"deleted {args.what} {args.id}")
    return 0


def jobs(args: argparse.Namespace) -> int:
    """Follow a job to its end (a progress bar), or cancel it."""
    with _client(args) as client:
        if args.action == "cancel":
            print_record(client.cancel_job(args.id), JOB_COLUMNS, as_json=args.json)
            return 0
        with JobProgressBar(Console(stderr=True)) as bar:
            result = client.follow(args.id, progress=bar)
    if args.json:
        print_json(result)
    else:
        print(f"{result.id}\t{type(result).__name__}")
    return 0


def models(args: argparse.Namespace) -> int:
    """A fitted model, or the clusters of new samples under it."""
    with _client(args) as client:
        if args.action == "get":
            columns = ("model_id", "init", "n_clusters", "n_features", "inertia")
            print_record(client.model(args.id), columns, as_json=args.json)
            return 0
        text = sys.stdin.read() if args.rows == "-" else args.rows
        try:
            rows = json.loads(text)
        except ValueError:
            raise CommandError("ROWS: give the samples as JSON, e.g. '[[1.0, 2.0]]'") from None
        prediction = client.predict(args.id, rows)
    if args.json:
        print_json(prediction)
    else:
        pairs = zip(prediction.labels, prediction.distances, strict=True)
        print_table([{"label": k, "distance": d} for k, d in pairs], ("label", "distance"))
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


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": run,
    "sweep": sweep,
    "stability": stability,
    "upload": upload,
    "plot": plot,
    "export": export,
    "anomalies": anomalies,
    "profiles": profiles,
    "report": report,
    "list_": list_,
    "delete": delete,
    "jobs": jobs,
    "models": models,
    "serve": serve,
}


def build_parser() -> argparse.ArgumentParser:
    return cli_parser.build_parser(HANDLERS)


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
