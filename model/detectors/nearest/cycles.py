"""The normal cycles a nearest-neighbour detector compares against, and its calibration.

:class:`NearestCycles` keeps up to ``max_references`` training cycles, standardised with the
training statistics and resampled to ``points`` samples, as buffers of its state dict (so a
checkpoint carries them), and answers, for any cycle, its distance to the nearest reference
under each configured metric of :mod:`model.detectors.nearest.distances`.

Calibration is cross-fitted: every training cycle's *reference distance* is measured without
itself (leave-one-out for the kept references, out-of-sample for the others), so it is what a
new normal cycle would get; the robust location and scale of those distances turn each metric
into a comparable z-score (:meth:`NearestCycles.zscores`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model.detectors.nearest.distances import euclidean, nearest_dtw, resample, sbd
from model.errors import DataError
from model.fitting import StandardisedNetwork, input_standardisation

METRICS = ("euclidean", "dtw", "sbd")
MAD_TO_SIGMA = 1.4826


def cycle_points(windows: Sequence[np.ndarray], max_points: int) -> int:
    """Samples per stored cycle: the median training length, at most ``max_points``."""
    return int(min(max_points, max(2, int(np.median([w.shape[0] for w in windows])))))


def robust_location_scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M,) median and floored 1.4826 x MAD of each column of (N, M) ``values``."""
    loc = np.median(values, axis=0)
    mad = np.median(np.abs(values - loc), axis=0) * MAD_TO_SIGMA
    floor = np.maximum(1e-3 * np.abs(loc), 1e-9)
    return loc, np.maximum(mad, floor)


class NearestCycles(StandardisedNetwork):
    """Reference cycles (R, P, F) and, per metric, the location and scale of normal distances."""

    cycles: torch.Tensor
    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self,
        n_features: int,
        metrics: Sequence[str],
        points: int,
        *,
        band: float = 0.1,
        candidates: int = 16,
        n_references: int = 1,
    ) -> None:
        super().__init__(n_features, dtype=torch.float32)
        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise DataError(f"metrics must be a non-empty list from {METRICS}, got {metrics}")
        self.metrics = tuple(metrics)
        self.n_features = n_features
        self.points = points
        self.band = band
        self.candidates = candidates
        shape = (n_references, points, n_features)
        self.register_buffer("cycles", torch.zeros(shape, dtype=torch.float32))
        self.register_buffer("loc", torch.zeros(len(metrics), dtype=torch.float64))
        self.register_buffer("scale", torch.ones(len(metrics), dtype=torch.float64))

    # ------------------------------------------------------------------ fitting
    def fit(self, windows: list[np.ndarray], max_references: int, seed: int) -> np.ndarray:
        """Keep the references (a seeded sample of ``max_references`` when there are more
        windows), calibrate, and return the (N, M) cross-fitted reference distances of every
        window (leave-one-out for kept ones, out-of-sample for the rest)."""
        if len(windows) < 2:
            raise DataError("a nearest-cycle detector needs at least 2 training windows")
        self.set_normalisation(*input_standardisation(windows))
        n = len(windows)
        keep = np.arange(n)
        if n > max_references:
            rng = np.random.default_rng(seed)
            keep = np.sort(rng.choice(n, size=max_references, replace=False))
        with torch.no_grad():
            self.cycles = self.prepare([windows[i] for i in keep]).to(self.cycles.device)
        rest = np.setdiff1d(np.arange(n), keep)
        ref = np.empty((n, len(self.metrics)), dtype=np.float64)
        ref[keep] = self._nearest(self.cycles, leave_one_out=True)
        if rest.size:
            ref[rest] = self.distances([windows[i] for i in rest])
        loc, scale = robust_location_scale(ref)
        with torch.no_grad():
            self.loc.copy_(torch.as_tensor(loc))
            self.scale.copy_(torch.as_tensor(scale))
        return ref

    # ------------------------------------------------------------------ scoring
    def prepare(self, windows: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, P, F) float32 cycles: standardised with the training statistics, resampled."""
        mean = self.input_mean.detach().cpu().double().numpy()
        std = self.input_std.detach().cpu().double().numpy()
        arr = resample([(w - mean) / std for w in windows], self.points)
        return torch.as_tensor(arr, dtype=torch.float32, device=self.cycles.device)

    def distances(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """(N, M) float64 distance of each window to its nearest reference, per metric."""
        return self._nearest(self.prepare(windows), leave_one_out=False)

    def zscores(self, distances: np.ndarray) -> np.ndarray:
        """(N, M) distances as robust z-scores against the normal reference distances."""
        loc = self.loc.detach().cpu().numpy()
        return (distances - loc) / self.scale.detach().cpu().numpy()

    def _nearest(self, Q: torch.Tensor, *, leave_one_out: bool) -> np.ndarray:
        R = self.cycles
        if leave_one_out and R.shape[0] < 2:
            raise DataError("leave-one-out distances need at least 2 reference cycles")
        cols = []
        with torch.inference_mode():
            for metric in self.metrics:
                if metric == "dtw":
                    d = nearest_dtw(
                        Q, R, self.band, self.candidates, exclude_self=leave_one_out
                    )  # fmt: skip
                else:
                    full = euclidean(Q, R) if metric == "euclidean" else sbd(Q, R)
                    if leave_one_out:
                        full.fill_diagonal_(torch.inf)
                    d = full.amin(dim=1)
                cols.append(d.double().cpu())
        return torch.stack(cols, dim=1).numpy()
