"""The boundary plot: the seed's figure, one panel per strategy, drawn fast.

The data is reduced to 2-D by PCA (unless it has 2 features), KMeans is fitted on the
reduced data with each panel's strategy, and its decision regions are drawn by
predicting one point per pixel of the panel, not per step of a fixed mesh: the same
picture to the eye, at a fraction of the seed's cost. matplotlib's object API with the
Agg canvas only, never pyplot's global state, so renders are safe in any process.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from service import plot_text
from service.benchmark import DEFAULT_ESTIMATOR, check_magnitude, estimator_class
from service.plot_text import PLAIN_TEXT, TEXT_WIDTH_SHARE, fit_text, subject
from service.png import encode_png

# matplotlib, Pillow and scikit-learn load in the workers that draw, never in the API
# process, which imports this module for PanelSpec (README "Performance").
if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from sklearn.cluster import BisectingKMeans, KMeans, MiniBatchKMeans
    from sklearn.decomposition import PCA, TruncatedSVD

T = TypeVar("T")

PANEL_WIDTH_IN = 5.0
HEIGHT_IN = 5.0
DPI = 100
# Axes position inside each panel, as fractions of the panel (left, bottom, width, height).
AXES_BOX = (0.04, 0.06, 0.92, 0.74)
MAX_POINTS = 20_000
# matplotlib's "Paired" colormap (ColorBrewer), its 12 colours as RGB bytes.
PAIRED = "a6cee3 1f78b4 b2df8a 33a02c fb9a99 e31a1c fdbf6f ff7f00 cab2d6 6a3d9a ffff99 b15928"
PALETTE_RGB = np.array([list(bytes.fromhex(colour)) for colour in PAIRED.split()], dtype=np.uint8)
PALETTE = PALETTE_RGB / 255.0


@dataclass(frozen=True)
class PanelSpec:
    """One panel: a strategy and the estimator, and for ``pca`` the benchmark model's
    centres, for ``custom`` the centres the user gave.

    ``start_centers`` are in the original feature space, shape (n_clusters, n_features).
    """

    init: str
    n_init: int
    start_centers: np.ndarray | None = None
    estimator: str = DEFAULT_ESTIMATOR


@dataclass
class Panel:
    """A panel ready to draw: the 2-D KMeans and its region labels per pixel."""

    spec: PanelSpec
    kmeans: KMeans | MiniBatchKMeans | BisectingKMeans
    labels: np.ndarray  # (height_px, width_px), row 0 at the bottom
    title: str


@dataclass(frozen=True)
class Frame:
    """What all panels share: the reduced data and the plane's extent in data units."""

    reduced: np.ndarray
    extent: tuple[float, float, float, float]  # x_min, x_max, y_min, y_max
    width_px: int
    height_px: int
    axis_labels: tuple[str, str]
    projection: PCA | TruncatedSVD | None


def figure_size_px(n_panels: int) -> tuple[int, int]:
    """(width, height) in pixels of a figure with ``n_panels`` panels."""
    return round(PANEL_WIDTH_IN * n_panels * DPI), round(HEIGHT_IN * DPI)


def axes_size_px() -> tuple[int, int]:
    """(width, height) in pixels of one panel's axes: one predicted point per pixel."""
    return round(PANEL_WIDTH_IN * AXES_BOX[2] * DPI), round(HEIGHT_IN * AXES_BOX[3] * DPI)


def make_frame(X: np.ndarray, feature_names: Sequence[str] | None = None) -> Frame:
    """Reduce ``X`` (n_samples, n_features) to 2-D and choose the plane's extent.

    The axes are named by ``feature_names`` (X's column names) when X has 2 features,
    else they are the first two principal components, each with the two columns of
    largest absolute loading when ``feature_names`` are given.
    """
    from sklearn.decomposition import PCA, TruncatedSVD

    from service.blockwise import is_sparse

    sparse = is_sparse(X)
    if X.shape[1] == 2:
        reduced = np.asarray(X.toarray() if sparse else X, dtype=np.float64)  # type: ignore[attr-defined]
        projection = None
        if feature_names is not None and len(feature_names) == 2:
            axis_labels = (feature_names[0], feature_names[1])
        else:
            axis_labels = ("feature 0 (2 features: no PCA needed)", "feature 1")
    else:
        # Sparse data is projected without centring, which would make it dense.
        projection = TruncatedSVD(2, random_state=0) if sparse else PCA(n_components=2)
        projection.fit(X)
        reduced = projection.transform(X).astype(np.float64)
        axis_labels = ("SVD1", "SVD2") if sparse else ("PC1", "PC2")
        if feature_names is not None and len(feature_names) == X.shape[1]:
            # Each component named by the columns that weigh most in it.
            axis_labels = tuple(  # type: ignore[assignment]
                f"{axis_labels[c]} (largest loadings: "
                + ", ".join(feature_names[j] for j in np.argsort(-np.abs(loadings))[:2])
                + ")"
                for c, loadings in enumerate(projection.components_)
            )
    lo, hi = reduced.min(axis=0), reduced.max(axis=0)
    margin = np.maximum((hi - lo) * 0.05, 1e-9)
    width_px, height_px = axes_size_px()
    return Frame(
        reduced=reduced,
        extent=(lo[0] - margin[0], hi[0] + margin[0], lo[1] - margin[1], hi[1] + margin[1]),
        width_px=width_px,
        height_px=height_px,
        axis_labels=axis_labels,
        projection=projection,
    )


def pixel_centres(frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    """The data coordinates of the pixel centres along x and y (bottom to top)."""
    x_min, x_max, y_min, y_max = frame.extent
    dx = (x_max - x_min) / frame.width_px
    dy = (y_max - y_min) / frame.height_px
    xs = x_min + (np.arange(frame.width_px) + 0.5) * dx
    ys = y_min + (np.arange(frame.height_px) + 0.5) * dy
    return xs, ys


def fit_panel(frame: Frame, spec: PanelSpec, *, n_clusters: int, random_state: int) -> Panel:
    """Fit the panel's KMeans on the reduced data and label every pixel centre."""
    cls = estimator_class(spec.estimator)
    prefix = "" if spec.estimator == DEFAULT_ESTIMATOR else f"{cls.__name__}, "
    kmeans: KMeans | MiniBatchKMeans | BisectingKMeans
    if spec.init in ("pca", "custom"):
        if spec.start_centers is None:
            raise ValueError(f"the {spec.init} panel needs start centres")
        starts = spec.start_centers
        if frame.projection is not None:
            starts = frame.projection.transform(starts)
        kmeans = cls(n_clusters=n_clusters, init=np.asarray(starts, np.float64), n_init=1)
        if spec.init == "pca":
            title = f"{prefix}pca: from the PCA-based model's centres"
        else:
            title = f"{prefix}custom: from the given centres"
        if spec.estimator == "minibatch":
            kmeans.set_params(random_state=random_state)
    else:
        kmeans = cls(
            n_clusters=n_clusters, init=spec.init, n_init=spec.n_init, random_state=random_state
        )
        title = f"{prefix}{spec.init} (n_init={spec.n_init})"
    with warnings.catch_warnings():
        # Fewer distinct 2-D points than clusters is worth drawing, not failing.
        warnings.simplefilter("ignore")
        kmeans.fit(frame.reduced)
    xs, ys = pixel_centres(frame)
    centres = np.empty((len(ys), len(xs), 2))  # the mesh, built in place
    centres[..., 0] = xs
    centres[..., 1] = ys[:, None]
    labels = kmeans.predict(centres.reshape(-1, 2))
    return Panel(spec=spec, kmeans=kmeans, labels=labels.reshape(len(ys), len(xs)), title=title)


def matched_labels(reference: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """The relabelling of ``labels`` that agrees most with ``reference``: an array whose
    entry ``a`` is the reference label cluster ``a`` is drawn as.

    Both are the labels of the same points (n_samples,), in 0..n_clusters-1. The
    assignment maximises the points on which the two agree (the Hungarian method on the
    contingency matrix), so the same partition is drawn in the same colours in every
    panel, whatever numbers each fit gave its clusters.
    """
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((n_clusters, n_clusters), dtype=np.int64)
    np.add.at(counts, (labels, reference), 1)
    rows, columns = linear_sum_assignment(counts, maximize=True)
    order = np.arange(n_clusters)
    order[rows] = columns
    return order


def compose(frame: Frame, panels: list[Panel], *, title_subject: str, random_state: int) -> Figure:
    """The figure of everything but the regions, on a transparent canvas, every text
    fitted to the width it has."""
    from matplotlib import patheffects
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle
    from matplotlib.transforms import Affine2D, Bbox, IdentityTransform

    n = len(panels)
    width_px, height_px = figure_size_px(n)
    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    figure.patch.set_alpha(0.0)
    FigureCanvasAgg(figure)
    reduced = frame.reduced
    if len(reduced) > MAX_POINTS:
        shown = np.random.default_rng(random_state).choice(len(reduced), MAX_POINTS, replace=False)
        points = reduced[np.sort(shown)]
        note = f" ({MAX_POINTS:,} of {len(reduced):,} points shown)"
    else:
        points, note = reduced, ""
    reduction = "SVD" if type(frame.projection).__name__ == "TruncatedSVD" else "PCA"
    kind = (
        f"({reduction + '-reduced data' if frame.projection is not None else '2 features'}){note}"
    )
    title = figure.suptitle("", fontsize=11, **PLAIN_TEXT)
    max_title_px = TEXT_WIDTH_SHARE * width_px
    marker = "Centroids are marked with white cross"
    if fit_text(
        title,
        lambda name: f"K-means clustering on {name} {kind}\n{marker}",
        title_subject,
        max_title_px,
    ):
        # Too wide: the data's description gets a line of its own before the name is
        # shortened.
        fit_text(
            title,
            lambda name: f"K-means clustering on {name}\n{kind}\n{marker}",
            title_subject,
            max_title_px,
        )
    left, bottom, width, height = AXES_BOX
    max_label_px = TEXT_WIDTH_SHARE * frame.width_px
    outline = [patheffects.withStroke(linewidth=5, foreground="black")]
    x_min, x_max, y_min, y_max = frame.extent
    scale_x = frame.width_px / (x_max - x_min)
    scale_y = frame.height_px / (y_max - y_min)
    y0 = round(bottom * height_px)
    for i, panel in enumerate(panels):
        # Each panel is a pixel box; artists are placed in pixels (display coordinates)
        # through an affine map from data units. No Axes: their tick machinery costs more
        # to build than everything drawn here.
        x0 = round((i + left) / n * width_px)
        to_pixels = Affine2D().translate(-x_min, -y_min).scale(scale_x, scale_y).translate(x0, y0)
        box = Bbox.from_bounds(x0, y0, frame.width_px, frame.height_px)
        dots = Line2D(
            points[:, 0], points[:, 1], linestyle="none", marker=".", markersize=2, color="k"
        )
        centres = panel.kmeans.cluster_centers_
        crosses = Line2D(
            centres[:, 0],
            centres[:, 1],
            linestyle="none",
            marker="x",
            markersize=13,  # the seed's scatter(s=169): 13 points across
            markeredgewidth=3,
            color="w",
            path_effects=outline,
        )
        for artist in (dots, crosses):
            artist.set_transform(to_pixels)
            artist.set_clip_box(box)
            figure.add_artist(artist)
        figure.add_artist(
            Rectangle(
                (x0, y0),
                frame.width_px,
                frame.height_px,
                fill=False,
                edgecolor="black",
                linewidth=0.8,
                transform=IdentityTransform(),
            )
        )
        centre_x = (i + left + width / 2) / n
        figure.text(
            centre_x,
            bottom + height + 0.01,
            panel.title,
            ha="center",
            va="bottom",
            fontsize=10,
            **PLAIN_TEXT,
        )
        x_label = figure.text(
            centre_x, bottom - 0.01, "", ha="center", va="top", fontsize=9, **PLAIN_TEXT
        )
        fit_text(x_label, str, frame.axis_labels[0], max_label_px)
        if i == 0:
            y_label = figure.text(
                (i + left) / n - 0.005,
                bottom + height / 2,
                "",
                ha="right",
                va="center",
                rotation=90,
                fontsize=9,
                **PLAIN_TEXT,
            )
            fit_text(y_label, str, frame.axis_labels[1], TEXT_WIDTH_SHARE * frame.height_px)
    return figure


def draw(frame: Frame, panels: list[Panel], *, title_subject: str, random_state: int) -> bytes:
    """Draw the panels side by side and return the PNG's bytes (no timestamp in them).

    matplotlib draws everything but the regions (text, frames, points, crosses) on a
    transparent canvas; the regions, one colour per pixel, are laid under it with NumPy.
    Same picture as ``imshow``, without resampling an image the size of the axes. The
    texts are drawn in a layer of their own, kept for the next plot with the same texts
    (they never overlap the panels: the same pixels as one drawing).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    n = len(panels)
    width_px, height_px = figure_size_px(n)
    left, bottom, _, _ = AXES_BOX
    with warnings.catch_warnings():
        # A client's name may hold characters the font lacks: drawn as boxes, not an error.
        warnings.filterwarnings("ignore", message="Glyph .* missing from", category=UserWarning)
        figure = compose(frame, panels, title_subject=title_subject, random_state=random_state)
        canvas = figure.canvas
        assert isinstance(canvas, FigureCanvasAgg)
        texts = list(figure.texts)
        shapes = [*figure.artists, *figure.lines, *figure.patches]

        def layer(shown: list[Any], hidden: list[Any]) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
            """The pixels that ``shown`` covers (their indices and RGBA), drawn alone."""
            for artist in hidden:
                artist.set_visible(False)
            for artist in shown:
                artist.set_visible(True)
            canvas.draw()  # type: ignore[no-untyped-call]
            overlay = np.asarray(canvas.buffer_rgba())  # type: ignore[no-untyped-call]
            covered = np.nonzero(overlay[..., 3])
            return covered, overlay[covered]

        drawing = layer(shapes, texts)
        text_key = (
            width_px,
            height_px,
            DPI,
            *[
                (
                    t.get_text(),
                    t.get_position(),
                    t.get_fontproperties(),
                    t.get_rotation(),
                    t.get_horizontalalignment(),
                    t.get_verticalalignment(),
                )
                for t in texts
            ],
        )
        lettering = plot_text.cached(plot_text.text_layers, text_key, lambda: layer(texts, shapes))

    pixels = np.full((height_px, width_px, 3), 255, dtype=np.uint8)
    top = height_px - round(bottom * height_px) - frame.height_px
    first = panels[0].kmeans.labels_
    for i, panel in enumerate(panels):
        x0 = round((i + left) / n * width_px)
        colour_of = matched_labels(first, panel.kmeans.labels_, len(panel.kmeans.cluster_centers_))
        colours = PALETTE_RGB[colour_of % len(PALETTE_RGB)]  # one row per cluster
        regions = pixels[top : top + frame.height_px, x0 : x0 + frame.width_px][
            ::-1
        ]  # row 0 on top
        np.take(colours, panel.labels, axis=0, out=regions)
    # Alpha-blend the drawing, then the texts, over the regions where they cover anything:
    # a small share of the pixels, so index them rather than blend the whole image.
    for covered, rgba in (drawing, lettering):
        alpha = rgba[:, 3:].astype(np.uint16)  # 255 * 255 + 127 fits
        blended = rgba[:, :3] * alpha + pixels[covered] * (255 - alpha)
        pixels[covered] = ((blended + 127) // 255).astype(np.uint8)
    return encode_png(pixels)


def render_boundaries(
    X: np.ndarray,
    specs: list[PanelSpec],
    *,
    n_clusters: int,
    random_state: int,
    dataset_name: str | None,
    dataset_id: str = "",
    feature_names: Sequence[str] | None = None,
) -> bytes:
    """The boundary plot of ``X`` with one panel per spec, as PNG bytes.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        The data as given (unscaled), with at least 2 features.
    specs : list of PanelSpec
        The panels, left to right.
    n_clusters, random_state : int
        As in the benchmark.
    dataset_name : str or None
        Named in the title as plain text (never mathtext), shortened to fit; data
        without a name is called by the first 8 characters of ``dataset_id``.
    dataset_id : str
        The dataset's id.
    feature_names : sequence of str, optional
        X's column names: the axes' labels when X has 2 features.

    Raises
    ------
    InvalidDataError
        Values so large that the sums of squares of PCA and KMeans would overflow.
    """
    from service.threads import serial_when_small

    check_magnitude(X)
    # For digits (1,797 points) the BLAS and OpenMP wake-ups cost more than the work: the
    # three panels' fits took 120 ms on 2 threads in a worker, 25 ms on one.
    with serial_when_small(X.shape):
        frame = make_frame(X, feature_names)
        panels = [
            fit_panel(frame, spec, n_clusters=n_clusters, random_state=random_state)
            for spec in specs
        ]
    return draw(
        frame,
        panels,
        title_subject=subject(dataset_name, dataset_id),
        random_state=random_state,
    )
