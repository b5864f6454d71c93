"""The plots' text: plain text always (never mathtext or TeX), shortened with an ellipsis
to fit its width, and its measured widths and drawn pixels kept per worker process."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from service.datasets import BUILTIN_LOADERS

if TYPE_CHECKING:
    from matplotlib.text import Text

T = TypeVar("T")

# Titles hold client text (an uploaded file's name): drawn as given, never parsed as
# mathtext ("$\\foo$" failed the whole plot) nor handed to TeX, whatever the rcParams.
PLAIN_TEXT: dict[str, Any] = {"parse_math": False, "usetex": False}
# Text may take this share of the width it is given (the figure's, or a panel's).
TEXT_WIDTH_SHARE = 0.96
ELLIPSIS = "\u2026"
# The same titles and labels come back plot after plot (one dataset, one set of
# strategies): their widths, and their drawn pixels, are kept per worker process rather
# than laid out and rasterised again (a third of a digits render's time).
TEXT_CACHE_SIZE = 64
text_widths: dict[tuple[Any, ...], float] = {}
text_layers: dict[tuple[Any, ...], tuple[tuple[np.ndarray, ...], np.ndarray]] = {}


def cached(cache: dict[tuple[Any, ...], T], key: tuple[Any, ...], make: Callable[[], T]) -> T:
    """``cache[key]``, made by ``make`` when missing; the oldest entry goes past
    TEXT_CACHE_SIZE."""
    if key in cache:
        return cache[key]
    value = cache[key] = make()
    while len(cache) > TEXT_CACHE_SIZE:
        del cache[next(iter(cache))]
    return value


def subject(dataset_name: str | None, dataset_id: str = "") -> str:
    """How a title calls the data: ``the iris dataset``, ``iris.csv``, or
    ``uploaded data (38ea2481)`` for data without a name."""
    if dataset_name in BUILTIN_LOADERS:
        return f"the {dataset_name} dataset"
    if dataset_name:
        return dataset_name
    return f"uploaded data ({dataset_id[:8]})" if dataset_id else "uploaded data"


def shortened(text: str, keep: int) -> str:
    """``text`` cut to ``keep`` characters, the middle replaced by an ellipsis (the end of
    a file name, its extension, stays)."""
    if keep >= len(text):
        return text
    head = (keep + 1) // 2
    tail = keep - head
    return text[:head] + ELLIPSIS + (text[len(text) - tail :] if tail else "")


def fit_text(artist: Text, compose: Callable[[str], str], part: str, max_px: float) -> bool:
    """Set ``artist``'s text to ``compose(part)``, ``part`` shortened with an ellipsis until
    the rendered text is at most ``max_px`` wide (measured by the figure's renderer).

    Returns whether ``part`` had to be shortened.
    """
    from matplotlib.figure import Figure

    figure = artist.get_figure()
    assert isinstance(figure, Figure)
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]

    def measured(text: str) -> float:
        artist.set_text(text)
        extent = artist.get_window_extent(renderer)
        return float(extent.height if artist.get_rotation() % 180 else extent.width)

    def width(text: str) -> float:
        style = (artist.get_fontproperties(), artist.get_rotation(), figure.dpi)
        return cached(text_widths, (text, *style), lambda: measured(text))

    if width(compose(part)) <= max_px:
        artist.set_text(compose(part))
        return False
    lo, hi = 0, len(part) - 1  # the longest shortening that fits, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if width(compose(shortened(part, mid))) <= max_px:
            lo = mid
        else:
            hi = mid - 1
    artist.set_text(compose(shortened(part, lo)))
    return True
