"""A sweep as text: one row per (k, strategy), the seed's digits, and each strategy's
recommended k; the report page shows the same cells."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service import benchmark as bm

if TYPE_CHECKING:
    from service.schemas.sweep import SweepPoint, SweepResult

# The text table: one row per (k, strategy), the seed's digits.
TABLE_HEADER = (
    "k", "init", "time", "inertia", "silhouette", "DB", "CH", "homo", "compl", "v-meas", "ARI",
    "AMI",
)  # fmt: skip
LABEL_SCORES = ("homogeneity", "completeness", "v_measure", "ari", "ami")
TABLE_RULE = 110 * "_"
RECOMMENDED = ("silhouette", "davies_bouldin", "calinski_harabasz", "elbow")


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def row_cells(row: SweepPoint) -> list[str]:
    """One (k, strategy) of a sweep as the table prints it (unescaped)."""
    return [
        str(row.k),
        f"{bm.TABLE_NAMES.get(row.init, row.init):9s}",
        f"{row.fit_time:.3f}s",
        f"{row.inertia:.0f}",
        _number(row.silhouette),
        _number(row.davies_bouldin),
        _number(row.calinski_harabasz, 1),
        *(_number(getattr(row, name)) for name in LABEL_SCORES),
    ]


def recommended_cells(answer: SweepResult) -> list[list[str]]:
    """Each strategy's recommended k, one row per strategy: its name (the first one's
    marked as the top-level ``recommended_k``), then one k per :data:`RECOMMENDED`."""
    return [
        [
            init + (" (recommended_k)" if i == 0 else ""),
            *("-" if (k := getattr(picks, name)) is None else str(k) for name in RECOMMENDED),
        ]
        for i, (init, picks) in enumerate(answer.recommended_k_by_strategy.items())
    ]


def all_warnings(answer: SweepResult) -> list[str]:
    """The answer's warnings, then each step's, prefixed with its k and strategy."""
    return [
        *answer.warnings,
        *(f"k={r.k}, {r.init}: {w}" for r in answer.results for w in r.warnings),
    ]


def format_table(answer: SweepResult) -> str:
    """A sweep as text: a line saying where the internal scores were measured, the table
    (k x strategy x scores; DB is Davies-Bouldin, CH Calinski-Harabasz), each strategy's
    recommended k, and the warnings."""
    params = answer.params
    lines = [
        f"k in {params.k}, estimator {params.estimator}; silhouette, DB and CH "
        f"measured in the {answer.score_space} space",
        TABLE_RULE,
        "\t".join(TABLE_HEADER),
        *("\t".join(row_cells(r)) for r in answer.results),
        TABLE_RULE,
        "recommended k\t" + "\t".join(RECOMMENDED),
        *("\t".join(cells) for cells in recommended_cells(answer)),
        *(f"warning: {w}" for w in all_warnings(answer)),
    ]
    return "\n".join(lines) + "\n"
