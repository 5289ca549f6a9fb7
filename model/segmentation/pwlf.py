"""The reference segmenter: ``pwlf.PiecewiseLinFit(x=arange(L), y).fit(K)``, seeded.

pwlf places the K - 1 inner breakpoints of a continuous piecewise-linear least-squares fit by
differential evolution (scipy) followed by a local polish. The reference does not seed it; here
every window is fitted with its own generator seeded by ``seed`` (and nothing else), so a window
gets the same breakpoints whatever else is in the batch. pwlf's own optimiser settings are kept.
Slow (0.1 to 0.3 s per 82-sample window for K = 3, seconds for long windows or large K): use it
to reproduce the reference and as the yardstick in tests, not on a stream.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import pwlf
from scipy.optimize import differential_evolution

from model.errors import DataError
from model.segmentation.base import Segmentation, as_window, knots_to_cuts

# pwlf.fit's own differential-evolution settings, repeated because passing any keyword (here the
# seed) replaces all of them.
_DE_SETTINGS: dict[str, object] = {
    "strategy": "best1bin",
    "maxiter": 1000,
    "popsize": 50,
    "tol": 1e-3,
    "mutation": (0.5, 1),
    "recombination": 0.7,
    "callback": None,
    "disp": False,
    "polish": True,
    "init": "latinhypercube",
    "atol": 1e-4,
}
_SEED_KEY = "rng" if "rng" in inspect.signature(differential_evolution).parameters else "seed"


def univariate(window: np.ndarray) -> np.ndarray:
    """(L,) series pwlf fits: the window itself, or for (L, F) the sum of standardised features.

    Each feature is centred and divided by its standard deviation (constant features contribute
    zero). This is a heuristic projection, not the multivariate least-squares problem the DP
    segmenter solves (features of opposite sign can cancel); use "dp" for multivariate windows.
    """
    w = as_window(window)  # (L, F)
    if w.shape[1] == 1:
        return w[:, 0]
    centred = w - w.mean(axis=0)
    std = centred.std(axis=0)
    scaled = np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)
    return scaled.sum(axis=1)


def continuous_ssr(window: np.ndarray, knots: np.ndarray | Sequence[float]) -> float:
    """SSR of the best continuous PWL fit with the given real inner knots, on x = 0..L-1.

    ``window``: (L,) or (L, F) (features fitted separately with shared knots, SSR summed);
    ``knots``: the K - 1 inner breakpoints (pwlf's ``fit_breaks[1:-1]``). Least squares on the
    hinge basis 1, x, (x - t_k)+ by numpy's SVD solver, so it is the same yardstick for any
    segmenter.
    """
    y = as_window(window)  # (L, F)
    x = np.arange(y.shape[0], dtype=np.float64)
    t = np.asarray(knots, dtype=np.float64).reshape(-1)
    design = np.column_stack([np.ones_like(x), x] + [np.maximum(x - tk, 0.0) for tk in t])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    res = y - design @ beta
    return float(np.sum(res * res))


class PwlfSegmenter:
    """Reference segmentation: pwlf ``fit(K)`` per window, seeded; cuts by ``int(b_i)``.

    Multivariate windows are reduced by :func:`univariate` (sum of standardised features).
    Breakpoints that truncate to the same sample are spread to keep the segments valid
    (see :func:`model.segmentation.base.knots_to_cuts`); windows need ``n_segments + 1`` samples.
    """

    def __init__(self, n_segments: int = 3, seed: int = 0) -> None:
        if n_segments < 1:
            raise DataError(f"n_segments must be >= 1, got {n_segments}")
        self.n_segments = n_segments
        self.seed = seed

    def knots(self, window: np.ndarray) -> np.ndarray:
        """(K-1,) real inner breakpoints pwlf finds for one window."""
        y = univariate(window)
        if y.shape[0] < 2:
            raise DataError("pwlf needs at least 2 samples per window")
        model = pwlf.PiecewiseLinFit(np.arange(y.shape[0], dtype=np.float64), y)
        settings = dict(_DE_SETTINGS)
        settings[_SEED_KEY] = np.random.default_rng(self.seed)
        breaks = model.fit(self.n_segments, **settings)
        return np.asarray(breaks, dtype=np.float64)[1:-1]

    def fit(self, windows: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """Real inner breakpoints per window and the SSR of each window's continuous fit."""
        knots = [self.knots(w) for w in windows]
        ssr = np.array([continuous_ssr(w, k) for w, k in zip(windows, knots, strict=True)])
        return knots, ssr

    def segment(self, windows: Sequence[np.ndarray]) -> Segmentation:
        lengths = np.array([as_window(w).shape[0] for w in windows], dtype=np.int64)
        if np.any(lengths < self.n_segments + 1):  # fail before the slow fits
            raise DataError(
                f"a window of {int(lengths.min())} samples cannot be cut into {self.n_segments} "
                f"segments (needs at least {self.n_segments + 1}); use longer windows or fewer "
                "segments"
            )
        inner = [self.knots(w) for w in windows]
        stacked = np.stack(inner) if inner else np.zeros((0, self.n_segments - 1))
        return Segmentation(knots_to_cuts(stacked, lengths))
