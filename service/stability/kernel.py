"""A stability run's computation: one strategy under every seed, the numbers summarised
over the seeds and the seeds' agreement; run in the workers."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from service import benchmark as bm
from service.stability.spec import StabilityParams
from service.sweeps.spec import SCORE_SPACE

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
