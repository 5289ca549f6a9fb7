"""Fitting the ``fiducial`` cutter on training series: period, polarity, prominence threshold.

* the period ``P`` (samples): the first peak of the series' mean autocorrelation that is at
  least ``0.8`` of its highest peak (the fundamental, not a multiple of it), refined to a
  fraction of a sample by a parabola through the peak and its neighbours;
* the polarity: for peaks (+1) and troughs (-1), the ``T / P`` most prominent extrema at least
  ``refractory * P`` apart are the fiducial points a cutter would use; the polarity whose points
  are the more prominent per sample of spread of their intervals (prominent and regular) wins;
* the prominence threshold: ``fraction`` of the median prominence of those points.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from scipy.signal import find_peaks

from model.cycles.fiducial import FiducialCutter
from model.errors import DataError

#: an autocorrelation peak this close to the highest one is a candidate for the period
_FUNDAMENTAL = 0.8
_SETTINGS = {"lead", "refractory", "min_factor", "max_factor", "window"}


def _signal(values: np.ndarray, feature: int) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] <= feature:
        raise DataError(
            f"training series of shape {x.shape} have no feature {feature}: "
            "pass (T,) or (T, F) arrays and a feature index below F"
        )
    return x[:, feature]


def fit_period(signals: Sequence[np.ndarray], max_period: int | None = None) -> float:
    """The typical cycle length in samples of 1-D ``signals``, by autocorrelation."""
    longest = max((s.size for s in signals), default=0)
    max_lag = min(longest // 2, max_period + 1 if max_period else longest)
    if max_lag < 8:
        raise DataError(
            "the period needs training series of at least 16 samples, several cycles each"
        )
    acf = np.zeros(max_lag + 1)
    for s in signals:
        z = s - s.mean()
        spectrum = np.fft.rfft(z, 2 * z.size)
        full = np.fft.irfft(np.abs(spectrum) ** 2)[: max_lag + 1]
        acf[: full.size] += full
    if not acf[0] > 0:
        raise DataError("the training series are constant: no period to find")
    acf /= acf[0]
    peaks, _ = find_peaks(acf)
    peaks = peaks[peaks >= 2]
    if peaks.size == 0 or acf[peaks].max() <= 0:
        raise DataError(
            "no periodicity found in the training series (their autocorrelation has no "
            "positive peak): use 'period:SECONDS' or 'fixed:LEN' cycles instead"
        )
    best = peaks[acf[peaks] >= _FUNDAMENTAL * acf[peaks].max()][0]
    a, b, c = acf[best - 1], acf[best], acf[best + 1] if best + 1 < acf.size else acf[best]
    curvature = a - 2 * b + c
    shift = 0.5 * (a - c) / curvature if curvature < 0 else 0.0
    return float(best + shift)


def _extrema(y: np.ndarray, period: float, refractory: float, wlen: int) -> tuple[float, float]:
    """(median prominence, median absolute deviation of the intervals) of the ``T / P`` most
    prominent peaks of ``y`` at least ``refractory * period`` apart."""
    with warnings.catch_warnings():  # flat stretches: peaks of no prominence, none chosen
        warnings.filterwarnings("ignore", "some peaks have a prominence of 0")
        peaks, props = find_peaks(
            y, prominence=0.0, wlen=wlen, distance=max(1, round(refractory * period))
        )
    count = max(2, round(y.size / period))
    if peaks.size < 2:
        return 0.0, np.inf
    top = np.sort(np.argsort(props["prominences"])[::-1][:count])
    intervals = np.diff(peaks[top])
    spread = float(np.median(np.abs(intervals - np.median(intervals))))
    return float(np.median(props["prominences"][top])), spread


def fit_fiducial(
    series: Sequence[np.ndarray],
    *,
    feature: int = 0,
    period: float | None = None,
    polarity: int | None = None,
    fraction: float = 0.5,
    max_period: int | None = None,
    **settings: Any,
) -> FiducialCutter:
    """A :class:`FiducialCutter` fitted on training ``series`` ((T,) or (T, F) arrays of
    normal data); ``period`` and ``polarity`` are estimated unless given. ``settings``: the
    cutter's other fields (``lead``, ``refractory``, ``min_factor``, ``max_factor``,
    ``window``)."""
    if not 0 < fraction <= 1:
        raise DataError(f"fraction must be within (0, 1], got {fraction}")
    signals = [_signal(v, feature) for v in series]
    p = float(period) if period is not None else fit_period(signals, max_period)
    if not set(settings) <= _SETTINGS:
        raise DataError(f"unknown fiducial settings {sorted(set(settings) - _SETTINGS)}")
    probe = replace(FiducialCutter(period=p, prominence=1.0, feature=feature), **settings)
    wlen = 2 * probe.half_window + 1
    scores, prominences = {}, {}
    for sign in (1, -1) if polarity is None else (polarity,):
        stats = [_extrema(sign * s, p, probe.refractory, wlen) for s in signals]
        prominences[sign] = float(np.median([prom for prom, _ in stats]))
        spread = float(np.median([sp for _, sp in stats]))
        scores[sign] = prominences[sign] / (spread + 1.0)  # +1 sample: exact periods tie
    sign = max(scores, key=lambda k: (scores[k], k))
    if not prominences[sign] > 0:
        raise DataError(
            "no prominent fiducial points in the training series: use 'period:SECONDS' or "
            "'fixed:LEN' cycles, or pass the period and polarity"
        )
    return replace(probe, prominence=fraction * prominences[sign], polarity=sign)
