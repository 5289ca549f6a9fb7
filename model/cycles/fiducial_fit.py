"""Fitting the ``fiducial`` cutter on training series: period, polarity, prominence threshold.

* candidate periods: the highest peaks of the series' mean autocorrelation (a few, since with
  strong jitter the peak at the period is broad and low, and within-cycle structure makes
  others);
* for each candidate ``L`` and polarity (+1 peaks, -1 troughs), the ``T / L`` most prominent
  extrema at least ``refractory * L`` apart are the fiducial points a cutter would use; the
  pair whose points are the most prominent per sample of spread of their intervals (prominent
  and regular) wins;
* the period ``P``: the median length of the cycles that pair's cutter cuts in the training
  series (robust to the candidate's error);
* the prominence threshold: ``fraction`` of the median prominence of those points.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from scipy.signal import find_peaks

from model.cycles.base import cut
from model.cycles.fiducial import FiducialCutter
from model.errors import DataError

#: autocorrelation peaks tried as the period
_CANDIDATES = 5
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


def period_candidates(signals: Sequence[np.ndarray], max_period: int | None = None) -> list[int]:
    """Lags (samples) of the highest peaks of the mean autocorrelation of 1-D ``signals``."""
    longest = max((s.size for s in signals), default=0)
    max_lag = min(longest // 2, max_period + 1 if max_period else longest)
    if max_lag < 8:
        raise DataError(
            "the period needs training series of at least 16 samples, several cycles each"
        )
    acf = np.zeros(max_lag + 1)
    for s in signals:
        z = s - s.mean()
        full = np.fft.irfft(np.abs(np.fft.rfft(z, 2 * z.size)) ** 2)[: max_lag + 1]
        acf[: full.size] += full
    if not acf[0] > 0:
        raise DataError("the training series are constant: no period to find")
    peaks, _ = find_peaks(acf / acf[0])
    peaks = peaks[(peaks >= 4) & (acf[peaks] > 0)]
    if peaks.size == 0:
        raise DataError(
            "no periodicity found in the training series (their autocorrelation has no "
            "positive peak): use 'period:SECONDS' or 'fixed:LEN' cycles instead"
        )
    return sorted(peaks[np.argsort(acf[peaks])[::-1][:_CANDIDATES]].tolist())


def _top_peaks(
    y: np.ndarray, period: float, refractory: float, wlen: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Positions and prominences of the ``T / period`` most prominent peaks of ``y`` at least
    ``refractory * period`` apart, in time order."""
    with warnings.catch_warnings():  # flat stretches: peaks of no prominence, none chosen
        warnings.filterwarnings("ignore", "some peaks have a prominence of 0")
        peaks, props = find_peaks(
            y, prominence=0.0, wlen=wlen, distance=max(1, round(refractory * period))
        )
    top = np.sort(np.argsort(props["prominences"])[::-1][: max(2, round(y.size / period))])
    return peaks[top], props["prominences"][top]


def _score(signals: list[np.ndarray], period: float, refractory: float) -> float:
    """How prominent and regular the fiducial points of ``signals`` are with this period:
    median prominence / (1 + mean absolute deviation of their intervals from their median,
    in samples; a missed or spurious point counts fully)."""
    proms, spreads = [], []
    for y in signals:
        peaks, prominences = _top_peaks(y, period, refractory, None)
        intervals = np.diff(peaks)
        if intervals.size >= 2:
            proms.append(np.median(prominences))
            spreads.append(np.mean(np.abs(intervals - np.median(intervals))))
    return float(np.median(proms) / (np.median(spreads) + 1.0)) if proms else 0.0


def _fit_threshold(probe: FiducialCutter, signals: list[np.ndarray], fraction: float) -> float:
    """``fraction`` of the median (windowed) prominence of the training fiducial points."""
    wlen = 2 * probe.half_window + 1
    proms = [_top_peaks(y, probe.period, probe.refractory, wlen)[1] for y in signals]
    return fraction * float(np.median(np.concatenate(proms)))


def _cycle_length(cutter: FiducialCutter, signals: list[np.ndarray]) -> float:
    """The median length of the unflagged cycles ``cutter`` cuts in ``signals``."""
    lengths = [len(c) for y in signals for c in cut(cutter, y) if not c.quality]
    return float(np.median(lengths)) if len(lengths) >= 2 else cutter.period


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
    normal data); ``period`` (samples) and ``polarity`` are estimated unless given.
    ``settings``: the cutter's other fields (``lead``, ``refractory``, ``min_factor``,
    ``max_factor``, ``window``)."""
    if not 0 < fraction <= 1:
        raise DataError(f"fraction must be within (0, 1], got {fraction}")
    if not set(settings) <= _SETTINGS:
        raise DataError(f"unknown fiducial settings {sorted(set(settings) - _SETTINGS)}")
    signals = [_signal(v, feature) for v in series]
    lags = [float(period)] if period is not None else period_candidates(signals, max_period)
    base = replace(FiducialCutter(period=lags[0], prominence=1.0, feature=feature), **settings)
    signs = (1, -1) if polarity is None else (polarity,)
    scores = {
        (lag, sign): _score([sign * y for y in signals], lag, base.refractory)
        for lag in lags
        for sign in signs
    }
    best = max(scores.values())  # ties (within rounding): the shorter period, then peaks
    lag, sign = min(
        (k for k in scores if scores[k] >= best * (1 - 1e-9)), key=lambda k: (k[0], -k[1])
    )
    if not scores[lag, sign] > 0:
        raise DataError(
            "no prominent fiducial points in the training series: use 'period:SECONDS' or "
            "'fixed:LEN' cycles, or pass the period and polarity"
        )
    polarised = [sign * y for y in signals]
    probe = replace(base, period=lag, polarity=sign)
    probe = replace(probe, prominence=_fit_threshold(probe, polarised, fraction))
    if period is None:  # the period: the typical length of the cycles the probe cuts
        probe = replace(probe, period=_cycle_length(probe, [y[:, None] for y in signals]))
    return replace(probe, prominence=_fit_threshold(probe, polarised, fraction))
