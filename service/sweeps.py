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
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ConfigDict

from service import benchmark as bm
from service.errors import InvalidParameterError, ServiceError
from service.params import FitParams, fit_form

# matplotlib and kneed (which loads SciPy) run in the workers only (README "Performance").
if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from service.schemas.sweep import SweepPoint, SweepResult

DEFAULT_K = tuple(range(2, 11))
SCORE_SPACE: bm.ScoreSpace = "clustered"
# Salted into the id, so that no answer computed before is served as a new one: 2 since
# the internal scores are measured in SCORE_SPACE (1 measured them on the data as given),
# 3 since recommended_k is the first strategy's (2 took each k's best run of any).
REVISION = 3
# A criterion, and whether a larger score is better.
CRITERIA: dict[str, bool] = {"silhouette": True, "davies_bouldin": False, "calinski_harabasz": True}


class SweepParams(FitParams):
    """A sweep request after defaults were applied; ``dataset`` is a content id. The
    fit's fields and their defaults are :class:`service.params.FitParams`'."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str
    k: tuple[int, ...]
    strategies: tuple[bm.Strategy, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "k": list(self.k),
            "strategies": [s.as_dict() for s in self.strategies],
            **fit_form(self),
        }

    def benchmark_at(self, k: int) -> bm.BenchmarkParams:
        """The one benchmark this sweep runs at ``k``."""
        return bm.BenchmarkParams(
            dataset=self.dataset, n_clusters=k, strategies=self.strategies, **self.fit_params()
        )


def sweep_id(params: SweepParams) -> str:
    """The request hash: params after defaults, dataset by content, versions salted in."""
    return hashlib.sha256(
        bm.canonical_json(
            {"sweep": params.as_dict(), "versions": bm.versions(params), "revision": REVISION}
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
            bm.check_params(
                benchmark.model_copy(update={"strategies": running}), n_samples, n_features
            )
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


# The plot: one panel per criterion, the scores against k, one line per strategy, and a
# dashed line at each strategy's recommended k, in the strategy's colour.
PANELS = (
    ("inertia", "inertia, the elbow marked", "elbow"),
    ("silhouette", "silhouette (higher is better)", "silhouette"),
    ("davies_bouldin", "Davies-Bouldin (lower is better)", "davies_bouldin"),
    ("calinski_harabasz", "Calinski-Harabasz (higher is better)", "calinski_harabasz"),
)
PANEL_SIZE_IN = 4.0
DPI = 100


def render_sweep(answer: SweepResult) -> bytes:
    """The scores of a sweep against k as PNG bytes, each strategy's recommended k marked
    (:func:`compose_sweep`)."""
    figure = compose_sweep(answer)
    buffer = io.BytesIO()
    figure.canvas.print_png(buffer, metadata={"Software": None})  # type: ignore[attr-defined]
    return buffer.getvalue()


def compose_sweep(answer: SweepResult) -> Figure:
    """The figure of a sweep's answer: one panel per criterion, the scores against k,
    one line per strategy and a dashed line at each strategy's recommended k.

    matplotlib's object API with the Agg canvas only (never pyplot), titles drawn as
    plain text, as the boundary plot does; the layout is constrained, so no band is left
    empty and every label sits inside the figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from service.plot_text import PLAIN_TEXT, shortened, subject
    from service.plotting import PALETTE

    results = answer.results
    picks = answer.recommended_k_by_strategy
    inits = list(picks)
    dataset = answer.dataset
    figure = Figure(
        figsize=(PANEL_SIZE_IN * len(PANELS), PANEL_SIZE_IN + 0.8), dpi=DPI, layout="constrained"
    )
    FigureCanvasAgg(figure)
    name = shortened(subject(dataset.name, dataset.id), 80)
    figure.suptitle(
        f"Choosing k on {name}: each strategy's recommended k is a dashed line",
        fontsize=11,
        **PLAIN_TEXT,
    )
    colours = {init: PALETTE[(2 * j + 1) % len(PALETTE)] for j, init in enumerate(inits)}
    all_k = sorted({r.k for r in results})
    what = {criterion: "elbow" if criterion == "elbow" else "best" for _, _, criterion in PANELS}
    for i, (score, title, criterion) in enumerate(PANELS):
        axes = figure.add_subplot(1, len(PANELS), i + 1)
        for init in inits:
            points = [
                (r.k, getattr(r, score))
                for r in results
                if r.init == init and getattr(r, score) is not None
            ]
            if points:
                ks, values = zip(*points, strict=True)
                axes.plot(ks, values, marker="o", markersize=4, color=colours[init], label=init)
        marks = []
        for j, init in enumerate(inits):
            pick = getattr(picks[init], criterion)
            if pick is not None:
                # Equal picks nest: the first strategy's line is the widest, each next
                # one drawn narrower on top of it, so every strategy's colour shows.
                marks.append(
                    axes.axvline(
                        pick,
                        color=colours[init],
                        linestyle="--",
                        linewidth=1.2 + 1.2 * (len(inits) - 1 - j),
                        label=f"{what[criterion]}: k={pick}"
                        + (f" ({init})" if len(inits) > 1 else ""),
                    )
                )
        axes.set_title(title, fontsize=10, **PLAIN_TEXT)
        axes.set_xlabel("k (n_clusters)", fontsize=9)
        axes.set_xticks(all_k)
        axes.set_xlim(all_k[0] - 0.5, all_k[-1] + 0.5)  # a line at an end k off the frame
        axes.tick_params(labelsize=8)
        if marks:
            axes.legend(handles=marks, fontsize=7)
        if not axes.get_lines():
            axes.text(0.5, 0.5, "no values", ha="center", transform=axes.transAxes, fontsize=9)
    handles = [
        Line2D([], [], marker="o", markersize=4, color=colours[init], label=init) for init in inits
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(inits), fontsize=9)
    return figure
