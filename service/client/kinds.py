"""What the client talks to: the service's address and timeouts, its kinds of question
(benchmark, sweep, stability: path, request and answer models) and upload media types."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from service.schemas import (
    BenchmarkRequest,
    BenchmarkResult,
    DatasetInfo,
    Job,
    StabilityRequest,
    StabilityResult,
    SweepRequest,
    SweepResult,
)

DEFAULT_URL = "http://127.0.0.1:8000"
# A benchmark computes for at most the server's CLUSTERBENCH_TIMEOUT_S (300 s by default)
# while the request waits for it; the read timeout leaves room for that.
DEFAULT_TIMEOUT = httpx.Timeout(330.0, connect=10.0)
# The media type of an upload, by its file's extension (service.formats reads the same).
MEDIA_TYPES = {
    ".csv": "text/csv",
    ".npy": "application/x-npy",
    ".npz": "application/x-npz",
    ".parquet": "application/vnd.apache.parquet",
    ".pq": "application/vnd.apache.parquet",
    ".json": "application/json",
    ".svm": "text/x-libsvm",
    ".libsvm": "text/x-libsvm",
}
# A scipy.sparse matrix is sent as scipy.sparse.save_npz writes it.
SCIPY_SPARSE = "application/x-scipy-sparse"
DATASETS_PATH = "/v1/datasets"
RETRY_STATUSES = frozenset({429, 503})
# Connections refused or reset before a request was sent; httpx retries those itself.
CONNECT_RETRIES = 2
# Polling a job: the first look after this long, then 1.5 times longer each time, up to
# the cap, unless the service's Retry-After says otherwise.
POLL_FIRST_S = 0.2
POLL_MAX_S = 1.0
CHUNK_BYTES = 1 << 20

T = TypeVar("T")


@dataclass(frozen=True)
class Kind:
    """One kind of question the service answers: where it is asked, with which request
    model, and which result model answers it. The client's parameters and the command's
    flags are the request model's fields, so a field added there reaches both."""

    name: str  # as a job's `kind` says it
    path: str
    request: type[BaseModel]
    result: type[BaseModel]

    def body(self, dataset: str | DatasetInfo | None, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON body asking ``dataset`` with ``fields`` (arrays as lists)."""
        unknown = [n for n in fields if n == "dataset" or n not in self.request.model_fields]
        if unknown:
            allowed = ", ".join(n for n in self.request.model_fields if n != "dataset")
            raise TypeError(
                f"a {self.name} takes no field {', '.join(unknown)}: its fields are {allowed} "
                "(and the dataset, the first argument)"
            )
        body: dict[str, Any] = {key: _plain(value) for key, value in fields.items()}
        if "strategies" in body:
            body["strategies"] = [
                item if isinstance(item, str) else dict(item) for item in body["strategies"]
            ]
        if dataset is not None:
            body["dataset"] = dataset.id if isinstance(dataset, DatasetInfo) else dataset
        return body


BENCHMARK = Kind("benchmark", "/v1/benchmarks", BenchmarkRequest, BenchmarkResult)
SWEEP = Kind("sweep", "/v1/sweeps", SweepRequest, SweepResult)
STABILITY = Kind("stability", "/v1/stability", StabilityRequest, StabilityResult)
KINDS = {kind.name: kind for kind in (BENCHMARK, SWEEP, STABILITY)}

ProgressCallback = Callable[[Job], Any]


def media_type_of(path: str | os.PathLike[str]) -> str:
    """The upload media type of a data file, by its extension."""
    suffix = Path(path).suffix.lower()
    try:
        return MEDIA_TYPES[suffix]
    except KeyError:
        raise ValueError(
            f"cannot tell the format of {os.fspath(path)!r} from its extension: use one of "
            f"{', '.join(MEDIA_TYPES)}, or give media_type"
        ) from None


def _plain(value: Any) -> Any:
    """A NumPy array (or anything with ``tolist``) as nested lists, for JSON."""
    return value.tolist() if hasattr(value, "tolist") else value
