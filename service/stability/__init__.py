"""Seed stability: the same benchmark under several seeds, and how much its answer moves.

For each seed (``random_state``) the benchmark runs as
:func:`service.benchmark.run_benchmark` would; per strategy the answer gives the mean
and the standard deviation (``numpy.std``, ddof=0) of inertia, of every score and of
the fit time over the seeds, and the adjusted Rand index between the labelings of every
pair of seeds: its mean and its minimum (1.0 when every seed finds the same partition).
The internal scores are measured in the space KMeans clustered
(:data:`service.sweeps.SCORE_SPACE`), the silhouette on one sample drawn from the
benchmark's ``random_state`` for every seed: a partition that does not change has no
spread. No HTTP here.

- :mod:`~service.stability.spec`: the question (parameters after defaults), its checks
  and id; read in the API process, without scikit-learn.
- :mod:`~service.stability.kernel`: one strategy under every seed, in the workers.
- :mod:`~service.stability.table`: the run as text.
"""

from service.stability.kernel import SUMMARISED, build_body, over_seeds, run_stability
from service.stability.spec import (
    MAX_SEEDS,
    REVISION,
    StabilityParams,
    check_labels,
    seed_list,
    stability_id,
)
from service.stability.table import TABLE_HEADER, all_warnings, format_table, row_cells

__all__ = [
    "MAX_SEEDS",
    "REVISION",
    "SUMMARISED",
    "TABLE_HEADER",
    "StabilityParams",
    "all_warnings",
    "build_body",
    "check_labels",
    "format_table",
    "over_seeds",
    "row_cells",
    "run_stability",
    "seed_list",
    "stability_id",
]
