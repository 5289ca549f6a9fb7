"""Axis and colour scales for energies: logarithmic when they span decades, so one huge
energy does not wash out the others."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from model.evaluation.plots.figures import colormap_and_colors

if TYPE_CHECKING:
    from matplotlib.colors import Normalize

HISTOGRAM_BINS = 50


def scale_for(values: np.ndarray) -> tuple[str, float]:
    """(scale, linthresh): "log" for positive values over more than two decades, "symlog"
    when a few values of any sign dwarf the typical one (linear within ``linthresh``),
    "linear" otherwise."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return "linear", 1.0
    lo, hi = float(v.min()), float(v.max())
    if lo > 0 and hi / lo > 100:
        return "log", 1.0
    mags = np.abs(v)
    typical = float(np.median(mags))
    linthresh = max(typical, 1e-6 * float(mags.max()), 1e-12)
    if float(mags.max()) / linthresh > 100:
        return "symlog", linthresh
    return "linear", 1.0


def value_range(values: np.ndarray) -> tuple[float, float]:
    """(min, max) of ``values``, widened to one unit when they are (nearly) all equal;
    (0, 1) when there are none."""
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def _symlog(x: float, c: float) -> float:
    return math.copysign(math.log10(1.0 + abs(x) / c), x)


def _symlog_inv(y: np.ndarray, c: float) -> np.ndarray:
    return np.sign(y) * c * (10.0 ** np.abs(y) - 1.0)


def histogram_bins(values: np.ndarray) -> tuple[str, float, list[float]]:
    """(scale, linthresh, bin edges) of a histogram of ``values``: :data:`HISTOGRAM_BINS` bins
    evenly spaced on the axis scale :func:`scale_for` picks."""
    scale, linthresh = scale_for(values)
    lo, hi = value_range(values)
    n_edges = HISTOGRAM_BINS + 1
    edges: np.ndarray
    if scale == "log":
        edges = np.geomspace(lo, hi, n_edges)
    elif scale == "symlog":
        edges = _symlog_inv(
            np.linspace(_symlog(lo, linthresh), _symlog(hi, linthresh), n_edges), linthresh
        )
        edges[0], edges[-1] = lo, hi
    else:
        edges = np.linspace(lo, hi, n_edges)
    return scale, linthresh, [float(b) for b in edges]


def energy_norm(energies: np.ndarray, threshold: float | None) -> Normalize:
    """Colour scale of segment energies (and the threshold), on the scale :func:`scale_for`
    picks."""
    _, colors = colormap_and_colors()
    finite = energies[np.isfinite(energies)]
    vals = np.array(list(finite) + ([threshold] if threshold is not None else []), dtype=float)
    lo, hi = value_range(vals)
    scale, linthresh = scale_for(vals)
    norm: Normalize
    if scale == "log":
        norm = colors.LogNorm(vmin=lo, vmax=hi)
    elif scale == "symlog":
        norm = colors.SymLogNorm(linthresh=linthresh, vmin=lo, vmax=hi, base=10)
    else:
        norm = colors.Normalize(vmin=lo, vmax=hi)
    return norm
