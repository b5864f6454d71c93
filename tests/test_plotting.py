"""The boundary plot: size, determinism, and regions that agree with KMeans.predict."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA

from service import plot_text, plotting
from service.benchmark import BenchmarkParams, Strategy, run_benchmark
from service.datasets import load_builtin
from service.plot_text import subject
from service.plotting import (
    AXES_BOX,
    DPI,
    HEIGHT_IN,
    PALETTE,
    PANEL_WIDTH_IN,
    Frame,
    Panel,
    PanelSpec,
    compose,
    draw,
    figure_size_px,
    fit_panel,
    make_frame,
    matched_labels,
    pixel_centres,
    render_boundaries,
)
from service.png import encode_png
from tests.helpers import png_size


def pca_centres(X: np.ndarray, y: np.ndarray, n_clusters: int) -> np.ndarray:
    params = BenchmarkParams(dataset="x", n_clusters=n_clusters, strategies=(Strategy("pca", 1),))
    (outcome,) = run_benchmark(X, y, params)
    return outcome.model.centers_in_feature_space()


@pytest.mark.parametrize("n_panels", [1, 3])
def test_size_and_determinism(n_panels: int) -> None:
    # Check the PNG's size for 1 and N panels, and that a second render is byte-identical.
    X, y = load_builtin("iris")
    specs = [
        PanelSpec("k-means++", 4),
        PanelSpec("random", 2),
        PanelSpec("pca", 1, pca_centres(X, y, 3)),
    ]
    png = render_boundaries(X, specs[:n_panels], n_clusters=3, random_state=0, dataset_name="iris")
    assert png_size(png) == figure_size_px(n_panels)
    assert figure_size_px(n_panels) == (500 * n_panels, 500)
    again = render_boundaries(
        X, specs[:n_panels], n_clusters=3, random_state=0, dataset_name="iris"
    )
    assert png == again
    assert b"tIME" not in png  # no timestamp chunk


@pytest.mark.parametrize(("init", "n_init"), [("k-means++", 4), ("random", 4), ("pca", 1)])
def test_regions_agree_with_kmeans_predict(init: str, n_init: int) -> None:
    # Check that the colour at a sample of pixel centres is the colour of the cluster that
    # KMeans (fitted directly on the PCA-reduced digits) predicts there.
    X, y = load_builtin("digits")
    centres = pca_centres(X, y, 10) if init == "pca" else None
    png = render_boundaries(
        X, [PanelSpec(init, n_init, centres)], n_clusters=10, random_state=0, dataset_name="digits"
    )
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64) / 255

    pca = PCA(n_components=2).fit(X)
    reduced = pca.transform(X)
    if init == "pca":
        kmeans = KMeans(n_clusters=10, init=pca.transform(centres), n_init=1).fit(reduced)
    else:
        kmeans = KMeans(n_clusters=10, init=init, n_init=n_init, random_state=0).fit(reduced)

    frame = make_frame(X)
    xs, ys = pixel_centres(frame)
    left_px = round(AXES_BOX[0] * PANEL_WIDTH_IN * DPI)
    bottom_px = round(AXES_BOX[1] * HEIGHT_IN * DPI)
    rng = np.random.default_rng(0)
    cols = rng.integers(2, frame.width_px - 2, 3000)
    rows = rng.integers(2, frame.height_px - 2, 3000)
    # Keep pixel centres clear of the drawn points (4 px) and crosses (12 px).
    x_min, x_max, y_min, y_max = frame.extent
    scale = np.array([frame.width_px / (x_max - x_min), frame.height_px / (y_max - y_min)])
    to_px = lambda data: (data - [x_min, y_min]) * scale - 0.5  # noqa: E731
    samples = np.column_stack([cols, rows])
    near_point = np.array([np.min(np.abs(to_px(reduced) - s).max(1)) < 4 for s in samples])
    near_cross = np.array(
        [np.min(np.abs(to_px(kmeans.cluster_centers_) - s).max(1)) < 12 for s in samples]
    )
    clear = ~near_point & ~near_cross
    assert clear.sum() >= 300
    cols, rows = cols[clear], rows[clear]
    expected = PALETTE[kmeans.predict(np.column_stack([xs[cols], ys[rows]])) % len(PALETTE)]
    actual = image[image.shape[0] - 1 - (bottom_px + rows), left_px + cols]
    np.testing.assert_allclose(actual, expected, atol=2 / 255)


def test_two_feature_data_is_not_reduced() -> None:
    # Check that 2-feature data is drawn as is, and the axes say so.
    X, _ = make_blobs(n_samples=60, centers=3, n_features=2, random_state=0)
    frame = make_frame(X)
    assert frame.projection is None
    np.testing.assert_array_equal(frame.reduced, X)
    assert "no PCA" in frame.axis_labels[0]
    png = render_boundaries(
        X, [PanelSpec("random", 4)], n_clusters=3, random_state=0, dataset_name="blobs"
    )
    assert png_size(png) == figure_size_px(1)


def test_more_clusters_than_distinct_points_still_draws() -> None:
    # Check that degenerate data (fewer distinct points than clusters) renders.
    X = np.array([[0.0, 0.0, 1.0]] * 4 + [[1.0, 1.0, 0.0]] * 4)
    png = render_boundaries(
        X, [PanelSpec("k-means++", 1)], n_clusters=3, random_state=0, dataset_name="tiny"
    )
    assert png_size(png) == figure_size_px(1)


def texts_of(figure: Figure) -> list[Text]:
    figure.canvas.draw()  # type: ignore[no-untyped-call]
    return [t for t in figure.findobj(Text) if t.get_text()]


def blob_frame(n_features: int, names: list[str] | None = None) -> tuple[Frame, list[Panel]]:
    X, _ = make_blobs(n_samples=60, centers=3, n_features=n_features, random_state=0)
    frame = make_frame(X, names)
    panel = fit_panel(frame, PanelSpec("random", 2), n_clusters=3, random_state=0)
    return frame, [panel]


@pytest.mark.parametrize("n_panels", [1, 3])
@pytest.mark.parametrize("name", ["iris", "x" * 300, "a long upload name, " * 12 + "data.csv"])
def test_texts_fit_in_the_figure(n_panels: int, name: str) -> None:
    # Check that every text, however long the dataset's name, is drawn inside the figure
    # (measured by the renderer), and that a shortened name keeps its end.
    frame, [panel] = blob_frame(4)
    figure = compose(frame, [panel] * n_panels, title_subject=subject(name), random_state=0)
    width_px, height_px = figure_size_px(n_panels)
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    for text in texts_of(figure):
        box = text.get_window_extent(renderer)
        assert 0 <= box.x0 <= box.x1 <= width_px, text.get_text()
        assert 0 <= box.y0 <= box.y1 <= height_px, text.get_text()
    title = figure.get_suptitle()
    if len(name) < 10:
        assert title.startswith(f"K-means clustering on the {name} dataset (PCA-reduced data)")
    else:
        assert "\u2026" in title
        assert name[-8:] in title
        assert "(PCA-reduced data)" in title


def test_unnamed_data_is_called_uploaded_data() -> None:
    # Check that unnamed data reads "uploaded data (38ea2481)", not "the dataset 38ea2481
    # dataset" nor a bare hash, and that a named upload is called by its name alone.
    frame, panels = blob_frame(3)
    figure = compose(
        frame, panels, title_subject=subject(None, "38ea2481" + "0" * 56), random_state=0
    )
    title = figure.get_suptitle()
    assert title.startswith("K-means clustering on uploaded data (38ea2481)")
    assert "dataset" not in title
    assert subject("blobs.csv", "38ea2481" + "0" * 56) == "blobs.csv"
    assert subject("wine") == "the wine dataset"


def test_axes_are_named_by_the_columns_or_the_components() -> None:
    # Check the axis labels: column names for 2 named features, PC1/PC2 for a projection.
    frame, panels = blob_frame(2, ["sepal length", "sepal width"])
    assert frame.axis_labels == ("sepal length", "sepal width")
    labels = {
        t.get_text() for t in texts_of(compose(frame, panels, title_subject="t", random_state=0))
    }
    assert {"sepal length", "sepal width"} <= labels
    frame, panels = blob_frame(5, [f"c{j}" for j in range(5)])
    for c, (label, loadings) in enumerate(
        zip(frame.axis_labels, frame.projection.components_, strict=True)  # type: ignore[union-attr]
    ):
        top = np.argsort(-np.abs(loadings))[:2]
        assert label == f"PC{c + 1} (largest loadings: c{top[0]}, c{top[1]})"
    assert blob_frame(5)[0].axis_labels == ("PC1", "PC2")
    # A name too long for the panel is shortened, not clipped.
    frame, panels = blob_frame(2, ["w" * 400, "h" * 400])
    figure = compose(frame, panels, title_subject="t", random_state=0)
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    for text in texts_of(figure):
        box = text.get_window_extent(renderer)
        assert 0 <= box.x0 <= box.x1 <= figure_size_px(1)[0], text.get_text()
        assert box.y0 >= 0, text.get_text()
    X, _ = make_blobs(n_samples=60, centers=3, n_features=2, random_state=0)
    png = render_boundaries(
        X,
        [PanelSpec("random", 2)],
        n_clusters=3,
        random_state=0,
        dataset_name=None,
        dataset_id="ab" * 32,
        feature_names=["a", "b"],
    )
    assert png == render_boundaries(
        X,
        [PanelSpec("random", 2)],
        n_clusters=3,
        random_state=0,
        dataset_name=None,
        dataset_id="ab" * 32,
        feature_names=["a", "b"],
    )


def test_the_same_partition_has_the_same_colours_in_every_panel() -> None:
    # Check that two panels finding the same partition under other cluster numbers (the
    # second starts from the first's centres in reverse order) draw their regions in the
    # same colours: each panel's labels are matched to the first panel's before colouring.
    X, _ = make_blobs(n_samples=90, centers=3, n_features=2, cluster_std=0.4, random_state=2)
    frame = make_frame(X)
    first = fit_panel(frame, PanelSpec("random", 2), n_clusters=3, random_state=0)
    reverse = first.kmeans.cluster_centers_[::-1]
    second = fit_panel(
        frame, PanelSpec("custom", 1, start_centers=reverse), n_clusters=3, random_state=0
    )
    assert np.array_equal(second.kmeans.labels_, 2 - first.kmeans.labels_)
    png = draw(frame, [first, second], title_subject="t", random_state=0)
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    width_px, height_px = figure_size_px(2)
    left, bottom, _, _ = AXES_BOX
    top = height_px - round(bottom * height_px) - frame.height_px
    panels = [
        image[top : top + frame.height_px, x0 : x0 + frame.width_px]
        for x0 in (round(left / 2 * width_px), round((1 + left) / 2 * width_px))
    ]
    assert np.array_equal(panels[0], panels[1])
    assert len(np.unique(panels[0].reshape(-1, 3), axis=0)) >= 3
    order = matched_labels(first.kmeans.labels_, second.kmeans.labels_, 3)
    assert order.tolist() == [2, 1, 0]


def test_png_holds_the_pixels_and_no_timestamp() -> None:
    # Check that the PNG the service writes itself decodes to exactly the pixels given.
    pixels = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    png = encode_png(pixels)
    assert png_size(png) == (5, 7)
    assert b"tIME" not in png
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), pixels)


def test_texts_are_laid_out_and_drawn_once_per_wording(monkeypatch: pytest.MonkeyPatch) -> None:
    # Check that a second plot with the same texts rasterises no text (its text layer and
    # widths are kept) yet gives the same PNG as a render from empty caches, and that a
    # plot with another name draws its texts again.
    from matplotlib.backends.backend_agg import RendererAgg

    drawn: list[str] = []
    draw_text = RendererAgg.draw_text

    def counting(self: RendererAgg, *args: Any, **kwargs: Any) -> None:
        drawn.append(args[3])  # gc, x, y, s, ...
        draw_text(self, *args, **kwargs)

    monkeypatch.setattr(RendererAgg, "draw_text", counting)
    X, _ = make_blobs(n_samples=60, centers=3, n_features=3, random_state=0)
    specs = [PanelSpec("k-means++", 2), PanelSpec("random", 2)]

    def render(name: str, random_state: int = 0) -> bytes:
        return render_boundaries(
            X, specs, n_clusters=3, random_state=random_state, dataset_name=name
        )

    first = render("cached-name.csv")
    assert any("cached-name.csv" in text for text in drawn)
    drawn.clear()
    assert render("cached-name.csv") == first
    assert render("cached-name.csv", random_state=1)
    assert drawn == []
    render("another-name.csv")
    assert any("another-name.csv" in text for text in drawn)
    monkeypatch.setattr(plot_text, "text_layers", {})
    monkeypatch.setattr(plot_text, "text_widths", {})
    assert render("cached-name.csv") == first


def test_small_data_is_reduced_and_fitted_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # Check that the PCA and the 2-D fits of small data run with BLAS and OpenMP capped at
    # one thread (their wake-ups cost more than the work), and that the cap is lifted after.
    from threadpoolctl import threadpool_info

    def threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info()}

    seen: list[set[int]] = []
    make, fit = plotting.make_frame, plotting.fit_panel

    def recording_make(*args: object, **kwargs: object) -> Frame:
        seen.append(threads())
        return make(*args, **kwargs)  # type: ignore[arg-type]

    def recording_fit(*args: object, **kwargs: object) -> Panel:
        seen.append(threads())
        return fit(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(plotting, "make_frame", recording_make)
    monkeypatch.setattr(plotting, "fit_panel", recording_fit)
    before = threads()
    X, _ = load_builtin("digits")
    render_boundaries(
        X, [PanelSpec("k-means++", 1)], n_clusters=10, random_state=0, dataset_name="digits"
    )
    assert seen == [{1}, {1}]
    assert threads() == before
