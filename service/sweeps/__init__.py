"""Choosing k: the benchmark's fit and scores for each k of a range, and the k each
criterion recommends. No HTTP here.

Every (k, strategy) is a one-strategy benchmark (:func:`service.benchmark.run_benchmark`),
so each number equals scikit-learn's as the benchmark's do, except that the internal scores
(silhouette, Davies-Bouldin, Calinski-Harabasz) are measured in the space KMeans clustered
(:data:`SCORE_SPACE`): they choose k among clusterings of that space. A strategy that
cannot run at a k (``pca`` past min(n_samples, n_features)) is skipped there, with a
warning. The recommendations:

- ``silhouette``: the k of the largest silhouette;
- ``davies_bouldin``: the k of the smallest Davies-Bouldin index;
- ``calinski_harabasz``: the k of the largest Calinski-Harabasz index;
- ``elbow``: the knee of inertia against k found by Kneedle (Satopaa et al., 2011, as
  implemented by the ``kneed`` package: a convex, decreasing curve, sensitivity S=1);
  null when the curve has no knee or fewer than 3 values of k.

``recommended_k_by_strategy`` gives each strategy's answer, computed on its own rows;
``recommended_k`` is the first strategy's (the one a client lists first, ``k-means++`` by
default), and the plot marks every strategy's.

- :mod:`~service.sweeps.spec`: the question (parameters after defaults), its checks, id
  and steps; read in the API process, without scikit-learn.
- :mod:`~service.sweeps.kernel`: each step's fit and scores, and the recommendations, in
  the workers.
- :mod:`~service.sweeps.table`: the sweep as text; :mod:`~service.sweeps.plot`: its plot.
"""

from service.sweeps.kernel import CRITERIA, build_body, elbow, fit_step, recommend, run_sweep
from service.sweeps.plot import compose_sweep, render_sweep
from service.sweeps.spec import (
    DEFAULT_K,
    REVISION,
    SCORE_SPACE,
    SweepParams,
    check_sweep,
    k_values,
    skip_warnings,
    skipped,
    steps,
    sweep_id,
)
from service.sweeps.table import (
    RECOMMENDED,
    TABLE_HEADER,
    all_warnings,
    format_table,
    recommended_cells,
    row_cells,
)

__all__ = [
    "CRITERIA",
    "DEFAULT_K",
    "RECOMMENDED",
    "REVISION",
    "SCORE_SPACE",
    "TABLE_HEADER",
    "SweepParams",
    "all_warnings",
    "build_body",
    "check_sweep",
    "compose_sweep",
    "elbow",
    "fit_step",
    "format_table",
    "k_values",
    "recommend",
    "recommended_cells",
    "render_sweep",
    "row_cells",
    "run_sweep",
    "skip_warnings",
    "skipped",
    "steps",
    "sweep_id",
]
