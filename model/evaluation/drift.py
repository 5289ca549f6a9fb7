"""Drift of a served model's live window scores against its training scores (pure numerics).

Every scored window carries its ``percentile``: the rank of its score among the model's
training window scores (:class:`~model.thresholds.EnergyQuantiles`; for Seq2GMM with
``scoring.cross_fit_folds`` and for kNN these are out-of-fold scores, i.e. what new normal
windows score). While the live windows come from the training distribution their percentiles
are Uniform(0, 100), so the statistic is the **population stability index** (PSI) of the live
percentiles over the ten training deciles against 10 % in each:

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i),   e_i = 0.1,  a_i = live share in decile i

(counts smoothed by half a window per bin, so an empty decile stays finite). PSI reads the
same whatever the detector's score scale, and it is what a drift dashboard usually shows:
below 0.1 stable, 0.1 to 0.25 a moderate shift, 0.25 and above a significant one
(:data:`ALERT_LEVEL`).

Sampling noise: on a stable stream, ``n * PSI`` is close to chi-square with 9 degrees of
freedom, so PSI averages about ``9 / n``. Below :data:`MIN_WINDOWS` windows no verdict is
given; at 200 windows a stable stream's PSI stays under 0.25 with probability above 1 - 1e-5
(tests/test_drift.py measures its 99.9th percentile on seeded uniform draws).

Caveat: a model whose quantiles were read from its own in-sample training scores (Seq2GMM
without cross-fitting) ranks new normal windows higher than its training windows, so its PSI
on a healthy stream sits above 0 from the start; compare with the value right after promotion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from model.errors import DataError

#: equal-probability bins of the training scores (deciles)
N_BINS = 10
#: PSI at or above which the score distribution has shifted significantly
ALERT_LEVEL = 0.25
#: PSI at or above which the shift is worth watching
WATCH_LEVEL = 0.1
#: fewer live windows than this give no verdict (sampling noise: PSI ~ 9 / n when stable)
MIN_WINDOWS = 200

Verdict = Literal["insufficient", "stable", "watch", "drift"]


def percentile_psi(percentiles: np.ndarray, n_bins: int = N_BINS) -> float:
    """PSI of live window percentiles (0..100) against Uniform(0, 100) over ``n_bins`` bins.

    NaN percentiles (a model without training quantiles) are left out; with none left the
    result is NaN."""
    p = np.asarray(percentiles, dtype=np.float64).ravel()
    p = p[~np.isnan(p)]
    if n_bins < 2:
        raise DataError(f"n_bins must be >= 2, got {n_bins}")
    if p.size == 0:
        return float("nan")
    bins = np.minimum((np.clip(p, 0.0, 100.0) * n_bins / 100.0).astype(np.int64), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
    actual = (counts + 0.5) / (p.size + 0.5 * n_bins)
    expected = 1.0 / n_bins
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@dataclass(frozen=True)
class DriftReport:
    """The drift of one model's live windows over one time range."""

    windows: int  # windows with a percentile
    statistic: float  # PSI of their percentiles (NaN without windows)
    anomaly_share: float  # share of windows above the model's threshold (NaN without windows)
    alert_level: float
    verdict: Verdict

    def to_dict(self) -> dict[str, object]:
        return {
            "windows": self.windows,
            "statistic": None if np.isnan(self.statistic) else round(self.statistic, 6),
            "anomaly_share": None if np.isnan(self.anomaly_share) else self.anomaly_share,
            "alert_level": self.alert_level,
            "verdict": self.verdict,
        }


def verdict(statistic: float, windows: int, min_windows: int = MIN_WINDOWS) -> Verdict:
    """``insufficient`` below ``min_windows``, else by the PSI's level."""
    if windows < min_windows or np.isnan(statistic):
        return "insufficient"
    if statistic >= ALERT_LEVEL:
        return "drift"
    return "watch" if statistic >= WATCH_LEVEL else "stable"


def drift_report(
    percentiles: np.ndarray, anomalous: np.ndarray, min_windows: int = MIN_WINDOWS
) -> DriftReport:
    """PSI, anomaly share and verdict of a set of live windows (one entry per window)."""
    p = np.asarray(percentiles, dtype=np.float64).ravel()
    flags = np.asarray(anomalous, dtype=bool).ravel()
    if p.shape != flags.shape:
        raise DataError(f"{p.size} percentiles but {flags.size} anomaly flags")
    known = ~np.isnan(p)
    n = int(known.sum())
    psi = percentile_psi(p[known])
    share = float(flags.mean()) if flags.size else float("nan")
    return DriftReport(n, psi, share, ALERT_LEVEL, verdict(psi, n, min_windows))
