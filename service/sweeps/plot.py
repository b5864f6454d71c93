"""A sweep's plot: the scores against k, one panel per criterion, drawn in a worker
(matplotlib loads there only)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from service.schemas.sweep import SweepResult

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
