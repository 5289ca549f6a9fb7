"""Example windows of a scored set: the most and the least anomalous, side by side."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from model.base import WindowScore
from model.errors import DataError
from model.evaluation.plots.figures import new_figure, short_number, titled
from model.evaluation.plots.scoring import detail_windows, reconstruction_of
from model.evaluation.plots.window import (
    Shading,
    draw_window,
    energy_colorbar,
    plot_window,
    shading_for,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def example_indices(scores: np.ndarray | Sequence[float], k: int) -> tuple[list[int], list[int]]:
    """Indices of the ``k`` highest and the ``k`` lowest scores (highest / lowest first);
    non-finite scores count as the most anomalous."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    key = np.where(np.isnan(s), np.inf, s)
    order = np.argsort(-key, kind="stable")
    k = max(0, min(k, s.size))
    return [int(i) for i in order[:k]], [int(i) for i in order[::-1][:k]]


def _grid_shading(
    details: Mapping[int, WindowScore], shown: list[int], threshold: float | None
) -> Shading:
    """One colour scale for the segment energies of every shown window."""
    scored = [details[i] for i in shown if i in details]
    energies = (
        np.concatenate([np.asarray(d.segment_energies, dtype=np.float64) for d in scored])
        if scored
        else np.zeros(0)
    )
    return shading_for(energies, threshold)


def _title_example(
    ax: Axes, i: int, score: float, truth: int | None, threshold: float | None
) -> None:
    """``#i  score ...  (normal|anomalous)``, red when the score is above the threshold."""
    text = "" if truth is None else "  anomalous" if truth == 1 else "  normal"
    flag = threshold is not None and math.isfinite(score) and score > threshold
    ax.set_title(
        f"#{i}  score {short_number(score)}{text}",
        fontsize=9,
        color="crimson" if flag else "black",
    )


def plot_examples(
    windows: Sequence[np.ndarray],
    scores: np.ndarray | Sequence[float],
    labels: np.ndarray | Sequence[int] | None = None,
    k: int = 3,
    *,
    details: Mapping[int, WindowScore] | None = None,
    threshold: float | None = None,
    label: str | None = None,
) -> Figure:
    """The ``k`` most anomalous (top row) and ``k`` least anomalous (bottom row) windows.

    ``details``: per window index, its :class:`WindowScore`; those windows get their segments
    shaded by energy (one colour scale for the whole grid) and the ones above ``threshold``
    hatched.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(windows) != s.size:
        raise DataError(f"{len(windows)} windows but {s.size} scores")
    if s.size == 0:
        raise DataError("no windows to show")
    y = np.asarray(labels).ravel() if labels is not None else None
    top, bottom = example_indices(s, k)
    k = len(top)
    shading = _grid_shading(details, top + bottom, threshold) if details else None
    fig = new_figure(3.6 * k, 5.6)
    axes = fig.subplots(2, k, squeeze=False)
    for row, (indices, name) in enumerate(((top, "most"), (bottom, "least"))):
        for col, i in enumerate(indices):
            ax = axes[row, col]
            draw_window(ax, windows[i], details.get(i) if details else None, shading)
            truth = int(y[i]) if y is not None else None
            _title_example(ax, i, float(s[i]), truth, threshold)
            ax.tick_params(labelsize=7)
            if col == 0:
                ax.set_ylabel(f"{name} anomalous", fontsize=9)
    if shading is not None:
        energy_colorbar(fig, axes.ravel().tolist(), shading, shrink=0.9)
    head = f"the {k} most and {k} least anomalous of {s.size} windows"
    if threshold is not None:
        head += f" (title red: score > threshold {short_number(threshold)}; label = ground truth)"
    fig.suptitle(titled(head, label), fontsize=10)
    return fig


def example_figures(
    detector: Any,
    windows: Sequence[np.ndarray],
    scores: np.ndarray,
    labels: np.ndarray | None,
    k: int,
    *,
    threshold: float | None,
    top_title: Callable[[int], str],
    label: str | None = None,
) -> tuple[Figure, Figure | None]:
    """:func:`plot_examples` of scored windows (segments shaded when the detector has
    ``score_detailed``), and the most anomalous window in detail, titled ``top_title(index)``,
    with its reconstruction when the detector has ``reconstruct`` (None without details)."""
    top, bottom = example_indices(scores, k)
    details = detail_windows(detector, windows, top + bottom)
    grid = plot_examples(
        windows, scores, labels, k, details=details, threshold=threshold, label=label
    )
    if not top or top[0] not in details:
        return grid, None
    i = top[0]
    detail = plot_window(
        windows[i],
        details[i],
        reconstruction=reconstruction_of(detector, windows[i]),
        threshold=threshold,
        title=top_title(i),
    )
    return grid, detail
