"""A stability run as text: the seed's table with mean ± standard deviation columns, and
the seeds' agreement; the report page shows the same cells."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service import benchmark as bm

if TYPE_CHECKING:
    from service.schemas.stability import MeanStd, StabilityResult, StrategyStability

TABLE_COLUMNS = ("homogeneity", "completeness", "v_measure", "ari", "ami", "silhouette")
TABLE_HEADER = (
    "init", "time", "inertia", "homo", "compl", "v-meas", "ARI", "AMI", "silhouette", "seed ARI",
)  # fmt: skip
TABLE_RULE = 130 * "_"


def _pm(summary: MeanStd, digits: int, suffix: str = "") -> str:
    if summary.mean is None or summary.std is None:
        return "-"
    return f"{summary.mean:.{digits}f}{suffix}±{summary.std:.{digits}f}{suffix}"


def row_cells(result: StrategyStability) -> list[str]:
    """One strategy's row of the table (unescaped): mean ± standard deviation over the
    seeds, and the mean / minimum adjusted Rand index between the seeds' labelings."""
    name = bm.TABLE_NAMES.get(result.init, result.init)
    ari = result.seed_ari
    return [
        f"{name:9s}",
        _pm(result.fit_time, 3, "s"),
        _pm(result.inertia, 0),
        *(_pm(getattr(result, k), 3) for k in TABLE_COLUMNS),
        "-" if ari.mean is None else f"{ari.mean:.3f}/{ari.min:.3f}",
    ]


def all_warnings(answer: StabilityResult) -> list[str]:
    """The answer's warnings, then each strategy's, prefixed with its name."""
    return [
        *answer.warnings,
        *(f"{r.init}: {w}" for r in answer.results for w in r.warnings),
    ]


def format_table(answer: StabilityResult) -> str:
    """The seed's table with ± columns (mean ± standard deviation over the seeds), and
    the mean / minimum adjusted Rand index between the seeds' labelings; then where the
    internal scores were measured, and the warnings."""
    seeds = answer.params.seeds
    lines = [
        f"{len(seeds)} seed(s): random_state in {seeds}",
        TABLE_RULE,
        "\t\t".join(TABLE_HEADER[:-1]) + "\t" + TABLE_HEADER[-1],
        *("\t".join(row_cells(r)) for r in answer.results),
        TABLE_RULE,
        f"silhouette, Davies-Bouldin and Calinski-Harabasz measured in the "
        f"{answer.score_space} space",
        *(f"warning: {w}" for w in all_warnings(answer)),
    ]
    return "\n".join(lines) + "\n"
