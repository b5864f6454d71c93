"""Every function a worker runs, local pool or Dask: paths in, small results out.

Each is a thin call into the domain code (arrays in, arrays out), made where the data
is: a stored dataset is read (memory-mapped) from its path in the worker, never sent.
The engine and the questions submit only these; :data:`PRELOAD` is what a worker's
forkserver imports once for every process it forks.

Importing this module loads none of the packages only the workers use (the domain
modules import them where they use them), so the API process may name these functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from service import benchmark as bm
from service import datasets, formats, inline, onnx_export, plotting, stability, sweeps
from service.datasets import load_design
from service.schemas import SweepResult
from service.tables import DEFAULT_MISSING

if TYPE_CHECKING:
    from pydantic import BaseModel

    from service.datasets import DatasetInfo
    from service.formats import DataLimits, Upload
    from service.schemas import BenchmarkRequest

M = TypeVar("M", bound="BaseModel")

# workerenv first: it sets the OpenMP environment before scikit-learn loads libgomp. The
# domain modules import scikit-learn, matplotlib and pyarrow where they use them (the API
# process never loads them): named here, the forkserver loads them once for every worker
# it forks, whose pages they share. This module last: it imports every domain module.
PRELOAD = (
    "service.workerenv",
    "sklearn.cluster",
    "sklearn.decomposition",
    "sklearn.metrics",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "matplotlib.backends.backend_agg",
    "matplotlib.figure",
    "PIL.Image",
    "pyarrow.compute",
    "pyarrow.csv",
    "pyarrow.parquet",
    "kneed",
    __name__,
)


def warm_up() -> None:
    """Run the whole job once on tiny data, so that one-time costs (OpenMP and BLAS
    thread pools, lazy imports) are not charged to the first strategy's ``fit_time``."""
    X = np.random.default_rng(0).normal(size=(64, 4))
    y = np.repeat([0, 1], 32)
    params = bm.BenchmarkParams(
        dataset="warm-up",
        n_clusters=2,
        strategies=tuple(bm.Strategy(init, 1) for init in bm.DEFAULT_STRATEGIES),
    )
    bm.run_benchmark(X, y, params)
    # matplotlib's first figure in a process loads fonts: pay it here, not in a request.
    plotting.render_boundaries(
        X, [plotting.PanelSpec("random", 1)], n_clusters=2, random_state=0, dataset_name="warm-up"
    )


def run_strategy_from_files(
    X_path: Path, y_path: Path | None, params: bm.BenchmarkParams, index: int
) -> bm.StrategyOutcome:
    """One benchmark strategy, ``params.strategies[index]``, on the stored dataset.

    Each strategy's fit depends only on the data and ``params`` (every one starts from
    ``random_state``), so running them one task at a time gives the numbers
    :func:`~service.benchmark.run_benchmark` gives, and lets a job report progress and
    stop between them.
    """
    data = load_design(X_path, y_path, params.missing)
    bm.check_magnitude(data.X)  # as run_benchmark does: a few ms per 10 million values
    return bm.fit_strategy(
        data.X,
        data.y,
        params.strategies[index],
        params,
        sample_weight=data.sample_weight,
        preprocessing=data.preprocessing,
    )[0]


def run_step_from_files(
    X_path: Path, y_path: Path | None, params: sweeps.SweepParams, k: int, index: int
) -> dict[str, Any]:
    """One sweep step, (k, strategy), on the stored dataset: one task per step gives
    the numbers :func:`~service.sweeps.run_sweep` gives."""
    data = load_design(X_path, y_path, params.missing)
    bm.check_magnitude(data.X)  # as run_sweep does
    return sweeps.fit_step(data.X, data.y, params, k, index, data.sample_weight)


def run_seeds_from_files(
    X_path: Path, y_path: Path | None, params: stability.StabilityParams, index: int
) -> dict[str, Any]:
    """One strategy of a stability run under every seed, on the stored dataset.

    A strategy's seeds stay in one task: the adjusted Rand index between them needs
    every seed's labels, which would otherwise travel back from the workers.
    """
    data = load_design(X_path, y_path, params.benchmark.missing)
    bm.check_magnitude(data.X)  # as run_stability does
    return stability.over_seeds(data.X, data.y, params, index, data.sample_weight)


def build_sweep_body(
    sweep: str,
    dataset: dict[str, Any],
    params: sweeps.SweepParams,
    results: list[dict[str, Any]],
    shape: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """A sweep's answer (its recommended k needs kneed, hence SciPy: in a worker)."""
    return sweeps.build_body(sweep, dataset, params, results, shape)


def render_sweep(answer: bytes) -> bytes:
    """A sweep's plot as PNG bytes, from its stored answer (parsed here, in the worker)."""
    return sweeps.render_sweep(SweepResult.model_validate_json(answer))


def render_boundaries_from_file(
    X_path: Path,
    specs: list[plotting.PanelSpec],
    missing: str = DEFAULT_MISSING,
    **options: Any,
) -> bytes:
    """A benchmark's boundary plot as PNG bytes, drawn from the stored dataset as its
    benchmark fitted it (a table imputed with ``missing`` and one-hot encoded, its
    design's column names on the axes); ``options`` as
    :func:`service.plotting.render_boundaries` takes them."""
    data = load_design(X_path, None, missing)
    if data.preprocessing is not None:
        options["feature_names"] = data.preprocessing.design_names()
    return plotting.render_boundaries(data.X, specs, **options)


def store_builtin(root: Path, name: str) -> DatasetInfo:
    """The built-in dataset ``name``, loaded and stored under ``root``."""
    return datasets.store_builtin(root, name)


def import_upload(path: Path, fmt: str, *args: Any, **options: Any) -> Upload:
    """An uploaded file read and stored (see :func:`service.formats.import_upload`)."""
    return formats.import_upload(path, fmt, *args, **options)


def benchmark_body(
    body_path: Path, datasets_root: Path, limits: DataLimits, pooled: bool = True
) -> tuple[BenchmarkRequest, DatasetInfo | None]:
    """A large benchmark body read from its file: the request and its inline dataset."""
    return inline.benchmark_body_in_worker(body_path, datasets_root, limits, pooled)


def request_body(
    model: type[M], body_path: Path, datasets_root: Path, limits: DataLimits, pooled: bool = True
) -> tuple[M, DatasetInfo | None]:
    """A large body of a request with data fields read from its file."""
    return inline.request_body_in_worker(model, body_path, datasets_root, limits, pooled)


def predict(body: bytes | Path, model: bm.FittedModel, max_distances: int) -> bytes:
    """The JSON answer of ``model`` to a predict request's body."""
    return inline.predict_in_worker(body, model, max_distances)


def anomalies(body: bytes | Path, model: bm.FittedModel, max_distances: int) -> bytes:
    """The JSON answer of ``model`` to an anomalies request's body."""
    return inline.anomalies_in_worker(body, model, max_distances)


def export_onnx(model: bm.FittedModel) -> bytes:
    """``model``'s whole pipeline as a serialised ONNX model."""
    return onnx_export.model_to_onnx(model)
