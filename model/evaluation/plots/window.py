"""One window in detail: each feature a line, its segments shaded by energy, the segments above
the threshold hatched, the reconstruction dashed. :func:`draw_window` also draws the small
windows of :func:`model.evaluation.plots.examples.plot_examples`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from model.base import WindowScore
from model.evaluation.plots.figures import as_2d, colormap_and_colors, new_figure, short_number
from model.evaluation.plots.scales import energy_norm

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colorbar import Colorbar
    from matplotlib.colors import Colormap, Normalize
    from matplotlib.figure import Figure

_MAX_LEGEND_FEATURES = 8
_UNSCORED_GREY = (0.7, 0.7, 0.7, 1.0)  # a segment without a finite energy
_HATCH_EDGE = (0.86, 0.08, 0.24, 0.55)  # crimson, half transparent


@dataclass(frozen=True)
class Shading:
    """How segments are coloured: the energy colour scale, its colour map, and the threshold
    above which a segment is hatched."""

    norm: Normalize
    cmap: Colormap
    threshold: float | None


def shading_for(energies: np.ndarray, threshold: float | None) -> Shading:
    """The shading of segments with these ``energies`` (one colour scale for all of them)."""
    cmap, _ = colormap_and_colors()
    return Shading(energy_norm(energies, threshold), cmap, threshold)


def energy_colorbar(fig: Figure, ax: Any, shading: Shading, **kwargs: Any) -> Colorbar:
    """The "segment energy" colour bar beside ``ax``, the threshold marked on it."""
    from matplotlib.cm import ScalarMappable

    cbar = fig.colorbar(
        ScalarMappable(norm=shading.norm, cmap=shading.cmap), ax=ax, pad=0.01, **kwargs
    )
    cbar.set_label("segment energy")
    if shading.threshold is not None:
        cbar.ax.axhline(shading.threshold, color="crimson", lw=2)
    return cbar


def _draw_samples(ax: Axes, w: np.ndarray, reconstruction: np.ndarray | None) -> None:
    """Each feature a line; the reconstruction dashed in the same colours when its shape fits."""
    n, f = w.shape
    x = np.arange(n)
    palette = [f"C{i % 10}" for i in range(f)]
    for j in range(f):
        name = f"feature {j}" if f > 1 else "samples"
        ax.plot(x, w[:, j], color=palette[j], lw=1.3, label=name, zorder=3)
    if reconstruction is None:
        return
    r = as_2d(reconstruction)
    if r.shape != w.shape:
        return
    for j in range(f):
        ax.plot(
            x,
            r[:, j],
            color=palette[j],
            lw=1.2,
            ls="--",
            alpha=0.9,
            label="reconstruction" if j == 0 else None,
            zorder=4,
        )


def _label_segment(ax: Axes, k: int, x: float, energy: float, *, top: bool, above: bool) -> None:
    """``E=...`` above segment ``k`` (▲ on the top segment), red and bold when flagged."""
    ax.text(
        x,
        0.98 - 0.07 * (k % 2),
        f"E={energy:.3g}" + (" ▲" if top else ""),
        transform=ax.get_xaxis_transform(),
        ha="center",
        va="top",
        fontsize=8,
        color="crimson" if above else "black",
        fontweight="bold" if above else "normal",
        clip_on=True,
        zorder=5,
    )


def _shade_segments(ax: Axes, result: WindowScore, shading: Shading, *, annotate: bool) -> None:
    """Each segment shaded by its energy, hatched above the threshold, bounds dotted."""
    energies = np.asarray(result.segment_energies, dtype=np.float64)
    threshold = shading.threshold
    for k, (a, b) in enumerate(result.intervals):
        lo, hi = (a - 0.5, b + 0.5) if a == b else (float(a), float(b))
        e = float(energies[k]) if k < energies.size else math.nan
        color = shading.cmap(shading.norm(e)) if math.isfinite(e) else _UNSCORED_GREY
        ax.axvspan(lo, hi, color=color, alpha=0.45, lw=0, zorder=1)
        above = threshold is not None and math.isfinite(e) and e > threshold
        if above:
            ax.axvspan(lo, hi, fill=False, hatch="//", edgecolor=_HATCH_EDGE, lw=1.5, zorder=2)
        if annotate:
            _label_segment(ax, k, (lo + hi) / 2, e, top=k == result.top_segment, above=above)
    for a, _ in result.intervals[1:]:
        ax.axvline(a, color="0.35", lw=0.6, ls=":", zorder=2)


def draw_window(
    ax: Axes,
    window: np.ndarray,
    result: WindowScore | None,
    shading: Shading | None,
    *,
    reconstruction: np.ndarray | None = None,
    detailed: bool = False,
) -> None:
    """Samples, segment shading (when ``result`` and ``shading`` are given) and the
    reconstruction on one Axes; ``detailed`` adds each segment's energy and the legend."""
    w = as_2d(window)
    n, f = w.shape
    _draw_samples(ax, w, reconstruction)
    if result is not None and shading is not None:
        _shade_segments(ax, result, shading, annotate=detailed)
    ax.set_xlim(-0.5, n - 0.5)
    ax.margins(y=0.15)
    if detailed and (f <= _MAX_LEGEND_FEATURES or reconstruction is not None):
        ax.legend(loc="lower right", fontsize=8, framealpha=0.8)


def _verdict(result: WindowScore | None, threshold: float | None) -> str:
    """The generated title: score, threshold, percentile, decision."""
    if result is None:
        return "window"
    parts = [f"score {short_number(result.score)}"]
    if threshold is not None:
        flagged = result.score > threshold
        parts.append(f"threshold {short_number(threshold)}")
    else:
        flagged = bool(result.is_anomaly)
    pct = result.percentile
    parts.append(f"percentile {pct:.1f}" if pct is not None else "percentile n/a")
    if threshold is not None or result.is_anomaly is not None:
        parts.append("ANOMALOUS" if flagged else "normal")
    return "  ·  ".join(parts)


def plot_window(
    window: np.ndarray,
    result: WindowScore | None,
    *,
    reconstruction: np.ndarray | None = None,
    threshold: float | None = None,
    title: str | None = None,
) -> Figure:
    """One window: each feature a line, segments shaded by energy (colour bar), segments with
    energy > ``threshold`` hatched with a red edge, ``reconstruction`` (L, F) dashed.

    ``title`` is added to the generated title (score, threshold, percentile, decision).
    ``result`` may be None (the samples only, e.g. a window the model could not score).
    """
    w = as_2d(window)
    fig = new_figure(10, 4.2)
    ax = fig.add_subplot()
    shading = None
    if result is not None:
        shading = shading_for(np.asarray(result.segment_energies, dtype=np.float64), threshold)
    draw_window(ax, w, result, shading, reconstruction=reconstruction, detailed=True)
    ax.set_xlabel("sample in window")
    ax.set_ylabel("value")
    if shading is not None:
        cbar = energy_colorbar(fig, ax, shading)
        if threshold is not None:
            cbar.ax.text(
                -0.1,
                threshold,
                "thr",
                color="crimson",
                ha="right",
                va="center",
                fontsize=8,
                transform=cbar.ax.get_yaxis_transform(),
            )
    head = _verdict(result, threshold)
    fig.suptitle(head if not title else f"{title}\n{head}", fontsize=11)
    return fig
