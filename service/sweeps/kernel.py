"""A sweep's computation: each (k, strategy) fitted and scored, arrays in and rows out,
and the k each criterion recommends; run in the workers."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from service import benchmark as bm
from service.sweeps.spec import SCORE_SPACE, SweepParams, skip_warnings, steps

# A criterion, and whether a larger score is better.
CRITERIA: dict[str, bool] = {"silhouette": True, "davies_bouldin": False, "calinski_harabasz": True}


def run_sweep(X: np.ndarray, y: np.ndarray | None, params: SweepParams) -> list[dict[str, Any]]:
    """Fit and score every (k, strategy) of ``params`` on ``X``.

    Parameters
    ----------
    X, y : ndarray
        As :func:`service.benchmark.run_benchmark` takes them.
    params : SweepParams
        Already checked against the data's shape (:func:`check_sweep`).

    Returns
    -------
    results : list of dict
        One per (k, strategy), k ascending, strategies in their order: ``k``, ``init``,
        ``n_init``, ``inertia``, ``n_iter``, the scores, ``fit_time`` and ``warnings``.
    """
    bm.check_magnitude(X)
    return [fit_step(X, y, params, k, index) for k, index in steps(params, *X.shape)]


def fit_step(
    X: np.ndarray,
    y: np.ndarray | None,
    params: SweepParams,
    k: int,
    index: int,
    sample_weight: np.ndarray | None = None,
) -> dict[str, Any]:
    """One (k, strategy) of the sweep: that strategy of the benchmark at ``k``, scored in
    the space KMeans clustered."""
    benchmark = params.benchmark_at(k)
    outcome, _ = bm.fit_strategy(
        X,
        y,
        benchmark.strategies[index],
        benchmark,
        score_space=SCORE_SPACE,
        sample_weight=sample_weight,
    )
    return {
        "k": k,
        "init": outcome.init,
        "n_init": outcome.n_init,
        "inertia": outcome.inertia,
        "n_iter": outcome.n_iter,
        **outcome.scores,
        "fit_time": outcome.fit_time,
        "warnings": outcome.warnings,
    }


def elbow(ks: Sequence[int], inertia: Sequence[float]) -> int | None:
    """The knee of a decreasing, convex inertia curve (Kneedle, via ``kneed``), or None."""
    if len(ks) < 3:
        return None
    # kneed imports scipy and matplotlib: in the workers only (see SweepQuestion.compute).
    from kneed import KneeLocator  # type: ignore[import-untyped]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no knee/elbow found" is an answer: None
        knee = KneeLocator(
            list(ks), list(inertia), S=1.0, curve="convex", direction="decreasing"
        ).knee
    return None if knee is None else int(knee)


def recommend(results: list[dict[str, Any]], init: str) -> dict[str, int | None]:
    """The k each criterion picks among the rows of strategy ``init`` in ``results``.

    A k whose score is null is skipped (the first of equal scores is taken).
    """
    rows = [r for r in results if r["init"] == init]  # k ascending, one row per k
    picks: dict[str, int | None] = {}
    for name, larger in CRITERIA.items():
        best: Callable[[list[float]], float] = max if larger else min
        per_k = {r["k"]: r[name] for r in rows if r[name] is not None}
        if not per_k:
            picks[name] = None
            continue
        pick = best(list(per_k.values()))
        picks[name] = min(k for k, value in per_k.items() if value == pick)
    picks["elbow"] = elbow([r["k"] for r in rows], [r["inertia"] for r in rows])
    return picks


def build_body(
    sweep: str,
    dataset: dict[str, Any],
    params: SweepParams,
    results: list[dict[str, Any]],
    shape: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The JSON answer of a sweep (``"cached": false``); ``id`` first, as stored answers are.

    ``dataset`` is the dataset's public summary; ``shape`` (the rows used by the encoded
    width, see :meth:`DatasetInfo.fit_shape`; else the summary's ``n_samples`` and
    ``n_features``) says which steps were skipped.
    """
    if shape is None:
        shape = dataset["n_samples"], dataset["n_features"]
    by_strategy = {s.init: recommend(results, s.init) for s in params.strategies}
    return {
        "id": sweep,
        "cached": False,
        "dataset": dataset,
        "params": params.as_dict(),
        "score_space": SCORE_SPACE,
        "results": results,
        "warnings": skip_warnings(params, *shape),
        "recommended_k": by_strategy[params.strategies[0].init],
        "recommended_k_by_strategy": by_strategy,
        "plot_url": f"/v1/sweeps/{sweep}/plot.png",
        "versions": dict(bm.versions(params)),
    }
