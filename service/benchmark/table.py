"""The benchmark as the seed prints it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# scikit-learn loads in the workers only: the API process checks, hashes and answers
# requests with the names and tables below (README "Performance").
from service.benchmark.spec import ESTIMATOR_NAMES, TABLE_NAMES
from service.params import DEFAULT_ESTIMATOR as DEFAULT_ESTIMATOR

if TYPE_CHECKING:
    pass

TABLE_RULE = 82 * "_"
TABLE_HEADER = "init\t\ttime\tinertia\thomo\tcompl\tv-meas\tARI\tAMI\tsilhouette"


def format_table(results: list[dict[str, Any]], estimator: str = DEFAULT_ESTIMATOR) -> str:
    """The benchmark as the seed prints it; a missing score prints as ``-``.

    Another estimator than KMeans is named on a line above the table.
    """
    lines = [TABLE_RULE, TABLE_HEADER]
    if estimator != DEFAULT_ESTIMATOR:
        lines.insert(0, f"estimator: {estimator} ({ESTIMATOR_NAMES[estimator]})")
    for r in results:
        scores = [
            "-" if r[k] is None else f"{r[k]:.3f}"
            for k in ("homogeneity", "completeness", "v_measure", "ari", "ami", "silhouette")
        ]
        name = TABLE_NAMES.get(r["init"], r["init"])
        lines.append(
            "\t".join([f"{name:9s}", f"{r['fit_time']:.3f}s", f"{r['inertia']:.0f}", *scores])
        )
    lines.append(TABLE_RULE)
    return "\n".join(lines) + "\n"
