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

With several strategies a k's score is the best any strategy reached at that k (its
inertia the lowest), so ``recommended_k`` answers "which k?" for the best run of each k;
``recommended_k_by_strategy`` gives each strategy's own answer.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from service import benchmark as bm
from service.datasets import load_arrays
from service.errors import InvalidParameterError, ServiceError

DEFAULT_K = tuple(range(2, 11))
SCORE_SPACE: bm.ScoreSpace = "clustered"
# Salted into the id: 2 since the internal scores are measured in SCORE_SPACE (1 measured
# them on the data as given), so that no answer computed before is served as a new one.
REVISION = 2
# A criterion, and whether a larger score is better.
CRITERIA: dict[str, bool] = {"silhouette": True, "davies_bouldin": False, "calinski_harabasz": True}


@dataclass(frozen=True)
class SweepParams:
    """A sweep request after defaults were applied; ``dataset`` is a content id."""

    dataset: str
    k: tuple[int, ...]
    strategies: tuple[bm.Strategy, ...]
    random_state: int = 0
    scale: bool = True
    estimator: str = bm.DEFAULT_ESTIMATOR
    algorithm: str = "lloyd"
    max_iter: int = 300
    tol: float = 1e-4
    silhouette_sample_size: int | None = 300

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "k": list(self.k),
            "strategies": [s.as_dict() for s in self.strategies],
            "random_state": self.random_state,
            "scale": self.scale,
            "estimator": self.estimator,
            "algorithm": self.algorithm,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "silhouette_sample_size": self.silhouette_sample_size,
        }

    def benchmark_at(self, k: int) -> bm.BenchmarkParams:
        """The one benchmark this sweep runs at ``k``."""
        return bm.BenchmarkParams(
            dataset=self.dataset,
            n_clusters=k,
            strategies=self.strategies,
            random_state=self.random_state,
            scale=self.scale,
            algorithm=self.algorithm,
            max_iter=self.max_iter,
            tol=self.tol,
            silhouette_sample_size=self.silhouette_sample_size,
            estimator=self.estimator,
        )


def sweep_id(params: SweepParams) -> str:
    """The request hash: params after defaults, dataset by content, versions salted in."""
    return hashlib.sha256(
        bm.canonical_json(
            {"sweep": params.as_dict(), "versions": bm.VERSIONS, "revision": REVISION}
        )
    ).hexdigest()


def k_values(k: Sequence[int] | tuple[int, int] | None) -> tuple[int, ...]:
    """The sorted distinct values of k; ``None`` is the default 2..10."""
    return DEFAULT_K if k is None else tuple(sorted(set(k)))


def check_sweep(params: SweepParams, n_samples: int, n_features: int) -> None:
    """Reject a sweep the data cannot satisfy, naming the k and the strategy.

    Raises
    ------
    InvalidParameterError
        A k the scores are undefined for (k > n_samples - 1), a custom strategy (its
        centres fit one k only), a strategy that runs at no k, or what
        :func:`service.benchmark.check_params` refuses.
    """
    for i, strategy in enumerate(params.strategies):
        if strategy.init == "custom":
            raise InvalidParameterError(
                "a sweep cannot use strategy 'custom': its centres fit one k only",
                errors=[{"loc": ["strategies", i], "msg": "custom centres fit one k only"}],
            )
    too_large = [k for k in params.k if k > n_samples - 1]
    if too_large:
        raise InvalidParameterError(
            f"k={too_large[0]} is too large for {n_samples} samples: the scores need "
            f"k <= n_samples - 1 = {n_samples - 1}",
            errors=[{"loc": ["k"], "msg": f"each k must be <= {n_samples - 1}"}],
        )
    skips = skipped(params, n_samples, n_features)
    for k in params.k:
        # A strategy that runs at no k is not skipped: it is refused at the first k.
        benchmark = params.benchmark_at(k)
        running = tuple(s for s in benchmark.strategies if k not in skips.get(s.init, ()))
        try:
            bm.check_params(replace(benchmark, strategies=running), n_samples, n_features)
        except ServiceError as exc:
            raise type(exc)(f"at k={k}: {exc.detail}", errors=exc.errors) from None


def skipped(params: SweepParams, n_samples: int, n_features: int) -> dict[str, tuple[int, ...]]:
    """The k each strategy cannot run at on data of this shape (``pca`` past
    min(n_samples, n_features)), for the strategies that run at some k."""
    out: dict[str, tuple[int, ...]] = {}
    for strategy in params.strategies:
        ks = tuple(
            k
            for k in params.k
            if bm.cannot_run(strategy.init, k, params.estimator, n_samples, n_features)
        )
        if ks and len(ks) < len(params.k):
            out[strategy.init] = ks
    return out


def skip_warnings(params: SweepParams, n_samples: int, n_features: int) -> list[str]:
    """One warning per strategy skipped at some k, naming those k and why."""
    return [
        f"strategy {init!r} skipped at k={', '.join(map(str, ks))}: it "
        f"{bm.cannot_run(init, ks[0], params.estimator, n_samples, n_features)}"
        for init, ks in skipped(params, n_samples, n_features).items()
    ]


def run_sweep(X: np.ndarray, y: np.ndarray | None, params: SweepParams) -> list[dict[str, Any]]:
    """Fit and score every (k, strategy) of ``params`` on ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Validated, finite data.
    y : ndarray of shape (n_samples,) or None
        Ground-truth labels; without them the label scores are None.
    params : SweepParams
        Already checked against the data's shape (:func:`check_sweep`).

    Returns
    -------
    results : list of dict
        One per (k, strategy), k ascending, strategies in their order: ``k``, ``init``,
        ``n_init``, ``inertia``, ``n_iter``, the scores, ``fit_time`` and ``warnings``.
    """
    bm.check_magnitude(X)
    return [_row(X, y, params, k, index) for k, index in steps(params, *X.shape)]


def _row(
    X: np.ndarray, y: np.ndarray | None, params: SweepParams, k: int, index: int
) -> dict[str, Any]:
    """One (k, strategy) of the sweep: that strategy of the benchmark at ``k``, scored in
    the space KMeans clustered."""
    benchmark = params.benchmark_at(k)
    outcome, _ = bm.fit_strategy(
        X, y, benchmark.strategies[index], benchmark, score_space=SCORE_SPACE
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


def steps(params: SweepParams, n_samples: int, n_features: int) -> list[tuple[int, int]]:
    """The sweep's steps on data of this shape, one executor task each, in the order of
    its results: (k, index of the strategy), the skipped ones left out."""
    skips = skipped(params, n_samples, n_features)
    return [
        (k, index)
        for k in params.k
        for index, strategy in enumerate(params.strategies)
        if k not in skips.get(strategy.init, ())
    ]


def run_step_from_files(
    X_path: Path, y_path: Path | None, params: SweepParams, k: int, index: int
) -> dict[str, Any]:
    """Worker entry point for one (k, strategy) on the stored (memory-mapped) dataset.

    Each fit depends only on the data, k and the strategy (every one starts from
    ``random_state``), so one task per step gives the numbers :func:`run_sweep` gives,
    and lets a job report progress and stop between them.
    """
    X, y = load_arrays(X_path, y_path)
    bm.check_magnitude(X)  # as run_sweep does: a few ms per 10 million values
    return _row(X, y, params, k, index)


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


def recommend(results: list[dict[str, Any]], init: str | None = None) -> dict[str, int | None]:
    """The k each criterion picks among ``results`` (one strategy's, or all of them).

    For each k the best score of any strategy counts; a k whose score is null is skipped.
    """
    rows = [r for r in results if init is None or r["init"] == init]
    ks = sorted({r["k"] for r in rows})
    picks: dict[str, int | None] = {}
    for name, larger in CRITERIA.items():
        best: Callable[[list[float]], float] = max if larger else min
        per_k = {
            k: best(values)
            for k in ks
            if (values := [r[name] for r in rows if r["k"] == k and r[name] is not None])
        }
        if not per_k:
            picks[name] = None
            continue
        pick = best(list(per_k.values()))
        picks[name] = min(k for k, value in per_k.items() if value == pick)
    lowest = [min(r["inertia"] for r in rows if r["k"] == k) for k in ks]
    picks["elbow"] = elbow(ks, lowest)
    return picks


def build_body(
    sweep: str, dataset: dict[str, Any], params: SweepParams, results: list[dict[str, Any]]
) -> dict[str, Any]:
    """The JSON answer of a sweep (``"cached": false``); ``id`` first, as stored answers are.

    ``dataset`` is the dataset's public summary (its ``n_samples`` and ``n_features`` say
    which steps were skipped).
    """
    inits = list(dict.fromkeys(r["init"] for r in results))
    return {
        "id": sweep,
        "cached": False,
        "dataset": dataset,
        "params": params.as_dict(),
        "score_space": SCORE_SPACE,
        "results": results,
        "warnings": skip_warnings(params, dataset["n_samples"], dataset["n_features"]),
        "recommended_k": recommend(results),
        "recommended_k_by_strategy": {init: recommend(results, init) for init in inits},
        "plot_url": f"/v1/sweeps/{sweep}/plot.png",
        "versions": dict(bm.VERSIONS),
    }


# The plot: one panel per criterion, the scores against k, one line per strategy.
PANELS = (
    ("inertia", "inertia (lower is better)", "elbow"),
    ("silhouette", "silhouette (higher is better)", "silhouette"),
    ("davies_bouldin", "Davies-Bouldin (lower is better)", "davies_bouldin"),
    ("calinski_harabasz", "Calinski-Harabasz (higher is better)", "calinski_harabasz"),
)
PANEL_SIZE_IN = 4.0
DPI = 100


def render_sweep(body: dict[str, Any], dataset_name: str) -> bytes:
    """The scores of a sweep against k as PNG bytes, the recommended k marked.

    matplotlib's object API with the Agg canvas only (never pyplot), titles drawn as
    plain text, as the boundary plot does.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from service.plotting import PALETTE, PLAIN_TEXT, _shortened

    results = body["results"]
    inits = list(dict.fromkeys(r["init"] for r in results))
    figure = Figure(figsize=(PANEL_SIZE_IN * len(PANELS), PANEL_SIZE_IN + 0.6), dpi=DPI)
    canvas = FigureCanvasAgg(figure)
    figure.suptitle(
        f"Choosing k on the {_shortened(dataset_name, 60)} dataset\n"
        "The recommended k is marked with a dashed line",
        fontsize=11,
        **PLAIN_TEXT,
    )
    recommended = body["recommended_k"]
    for i, (score, title, criterion) in enumerate(PANELS):
        axes = figure.add_subplot(1, len(PANELS), i + 1)
        for j, init in enumerate(inits):
            points = [
                (r["k"], r[score]) for r in results if r["init"] == init and r[score] is not None
            ]
            if points:
                ks, values = zip(*points, strict=True)
                axes.plot(
                    ks,
                    values,
                    marker="o",
                    markersize=4,
                    color=PALETTE[(2 * j + 1) % len(PALETTE)],
                    label=init,
                )
        pick = recommended.get(criterion)
        if pick is not None:
            axes.axvline(pick, color="black", linestyle="--", linewidth=1)
            axes.text(
                pick, 1.0, f" k={pick}", transform=axes.get_xaxis_transform(), va="top", fontsize=9
            )
        axes.set_title(title, fontsize=10, **PLAIN_TEXT)
        axes.set_xlabel("k (n_clusters)", fontsize=9)
        axes.set_xticks(sorted({r["k"] for r in results}))
        axes.tick_params(labelsize=8)
        if i == 0:
            axes.legend(fontsize=8)
    figure.tight_layout(rect=(0, 0, 1, 0.9))
    buffer = io.BytesIO()
    canvas.print_png(buffer, metadata={"Software": None})  # type: ignore[no-untyped-call]
    return buffer.getvalue()
