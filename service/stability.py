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
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service import benchmark as bm
from service.errors import PayloadTooLargeError
from service.sweeps import SCORE_SPACE

if TYPE_CHECKING:
    from service.schemas.stability import MeanStd, StabilityResult, StrategyStability

MAX_SEEDS = 100
# Salted into the id: 2 since the internal scores are measured in SCORE_SPACE and the
# silhouette's sample is drawn once per run (1 measured them on the data as given, on a
# sample redrawn per seed), so that no answer computed before is served as a new one.
REVISION = 2
# The numbers summarised over the seeds, in the order they are reported.
SUMMARISED = (
    "inertia",
    "homogeneity",
    "completeness",
    "v_measure",
    "ari",
    "ami",
    "silhouette",
    "davies_bouldin",
    "calinski_harabasz",
    "fit_time",
)


@dataclass(frozen=True)
class StabilityParams:
    """A stability request after defaults: a benchmark (its ``random_state`` unused)
    and the seeds it runs with."""

    benchmark: bm.BenchmarkParams
    seeds: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        params = self.benchmark.as_dict()
        del params["random_state"]
        params["seeds"] = list(self.seeds)
        return params


def stability_id(params: StabilityParams) -> str:
    """The request hash: params after defaults, dataset by content, versions salted in."""
    return hashlib.sha256(
        bm.canonical_json(
            {
                "stability": params.as_dict(),
                "versions": bm.versions(params.benchmark),
                "revision": REVISION,
            }
        )
    ).hexdigest()


def check_labels(params: StabilityParams, n_samples: int, max_labels: int) -> None:
    """Refuse a run whose kept labels (every seed's, for the pairwise ARI) pass the bound.

    Raises
    ------
    PayloadTooLargeError
        Naming seeds x n_samples, the bound and its setting.
    """
    n_seeds = len(params.seeds)
    if n_seeds * n_samples > max_labels:
        raise PayloadTooLargeError(
            f"{n_seeds} seeds x {n_samples} samples is {n_seeds * n_samples} labels kept for "
            f"the pairwise adjusted Rand index, more than the limit of {max_labels} "
            "(CLUSTERBENCH_STABILITY_MAX_LABELS); ask with fewer seeds or on fewer samples",
            errors=[{"loc": ["seeds"], "msg": f"at most {max(1, max_labels // n_samples)} seeds"}],
        )


def seed_list(seeds: int | list[int]) -> tuple[int, ...]:
    """``n`` -> 0..n-1; a list keeps its order, without repeats."""
    return tuple(range(seeds)) if isinstance(seeds, int) else tuple(dict.fromkeys(seeds))


def _summary(values: list[float | None]) -> dict[str, float | None]:
    present = np.array([v for v in values if v is not None], dtype=np.float64)
    if present.size == 0:
        return {"mean": None, "std": None}
    return {"mean": float(present.mean()), "std": float(present.std())}


def run_stability(
    X: np.ndarray, y: np.ndarray | None, params: StabilityParams
) -> list[dict[str, Any]]:
    """Run the benchmark once per seed and summarise each strategy over the seeds.

    Parameters
    ----------
    X, y : ndarray
        As :func:`service.benchmark.run_benchmark` takes them.
    params : StabilityParams
        The benchmark already checked against the data's shape.

    Returns
    -------
    results : list of dict
        One per strategy, in their order: ``init``, ``n_init``, ``n_seeds``,
        ``{"mean", "std"}`` for each of :data:`SUMMARISED`, ``seed_ari``
        ``{"mean", "min"}`` over the pairs of seeds (null with one seed), ``per_seed``
        (each seed's inertia and scores) and ``warnings``.
    """
    bm.check_magnitude(X)
    return [over_seeds(X, y, params, index) for index in range(len(params.benchmark.strategies))]


def over_seeds(
    X: np.ndarray,
    y: np.ndarray | None,
    params: StabilityParams,
    index: int,
    sample_weight: np.ndarray | None = None,
) -> dict[str, Any]:
    """One strategy, ``params.benchmark.strategies[index]``, under every seed."""
    from sklearn import metrics

    strategy = params.benchmark.strategies[index]
    rows: list[dict[str, Any]] = []
    labelings: list[np.ndarray] = []
    warned: dict[str, None] = {}
    for seed in params.seeds:
        run = params.benchmark.model_copy(update={"random_state": seed})
        outcome, labels = bm.fit_strategy(
            X,
            y,
            strategy,
            run,
            score_space=SCORE_SPACE,
            sample_state=params.benchmark.random_state,
            sample_weight=sample_weight,
        )
        rows.append(
            {
                "random_state": seed,
                "inertia": outcome.inertia,
                **outcome.scores,
                "fit_time": outcome.fit_time,
            }
        )
        # Every seed's labels are kept for the pairwise ARI: in the smallest dtype that
        # holds them (1 byte, not KMeans' 4, up to 256 clusters), which makes a quarter of
        # what grew with seeds x n_samples (4.5 GB at 20M samples x 100 seeds, rising).
        labelings.append(labels.astype(np.min_scalar_type(params.benchmark.n_clusters - 1)))
        warned.update(dict.fromkeys(outcome.warnings))
    pairs = [
        float(metrics.adjusted_rand_score(a, b)) for a, b in itertools.combinations(labelings, 2)
    ]
    return {
        "init": strategy.init,
        "n_init": strategy.n_init,
        "n_seeds": len(params.seeds),
        **{name: _summary([row[name] for row in rows]) for name in SUMMARISED},
        "seed_ari": {
            "mean": float(np.mean(pairs)) if pairs else None,
            "min": float(np.min(pairs)) if pairs else None,
        },
        "per_seed": rows,
        "warnings": list(warned),
    }


def build_body(
    stability: str,
    dataset: dict[str, Any],
    params: StabilityParams,
    results: list[dict[str, Any]],
    shape: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The JSON answer (``"cached": false``); ``id`` first, as stored answers are.

    ``shape``: the rows used by the encoded width (else the summary's ``n_samples`` and
    ``n_features``), for the warnings of strategies left out."""
    if shape is None:
        shape = dataset["n_samples"], dataset["n_features"]
    return {
        "id": stability,
        "cached": False,
        "dataset": dataset,
        "n_clusters": params.benchmark.n_clusters,
        "params": params.as_dict(),
        "score_space": SCORE_SPACE,
        "results": results,
        "warnings": params.benchmark.warnings(*shape),
        "versions": dict(bm.versions(params.benchmark)),
    }


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
