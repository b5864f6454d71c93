"""The reference job: scikit-learn's "K-Means on the handwritten digits" benchmark.

- :mod:`~service.benchmark.spec`: the question (strategies, parameters after defaults),
  its checks and ids; read in the API process, without scikit-learn.
- :mod:`~service.benchmark.model`: a fitted strategy as plain arrays, and its outcome.
- :mod:`~service.benchmark.kernel`: the fits and scores (arrays in, arrays out), run in
  the workers.
- :mod:`~service.benchmark.table`: the benchmark printed as the seed prints it.
"""

from service.benchmark.kernel import fit_strategy, run_benchmark
from service.benchmark.model import PREDICT_BLOCK_BYTES, FittedModel, StrategyOutcome
from service.benchmark.spec import (
    ALLOWED_STRATEGIES,
    DEFAULT_ESTIMATOR,
    DEFAULT_N_INIT,
    DEFAULT_STRATEGIES,
    MAX_MODEL_VALUES,
    TABLE_NAMES,
    VERSIONS,
    BenchmarkParams,
    ResolvedBenchmark,
    ScoreSpace,
    Strategy,
    benchmark_id,
    cannot_run,
    canonical_json,
    check_centers,
    check_magnitude,
    check_params,
    default_n_clusters,
    estimator_class,
    magnitude_bound,
    model_id,
    strategies_of,
    versions,
)
from service.benchmark.table import TABLE_HEADER, format_table

__all__ = [
    "ALLOWED_STRATEGIES",
    "DEFAULT_ESTIMATOR",
    "DEFAULT_N_INIT",
    "DEFAULT_STRATEGIES",
    "MAX_MODEL_VALUES",
    "PREDICT_BLOCK_BYTES",
    "TABLE_HEADER",
    "TABLE_NAMES",
    "VERSIONS",
    "BenchmarkParams",
    "FittedModel",
    "ResolvedBenchmark",
    "ScoreSpace",
    "Strategy",
    "StrategyOutcome",
    "benchmark_id",
    "cannot_run",
    "canonical_json",
    "check_centers",
    "check_magnitude",
    "check_params",
    "default_n_clusters",
    "estimator_class",
    "fit_strategy",
    "format_table",
    "magnitude_bound",
    "model_id",
    "run_benchmark",
    "strategies_of",
    "versions",
]
