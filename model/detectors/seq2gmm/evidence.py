"""Whole-cycle evidence beside the segment energies: how far a cycle lies from its nearest
normal cycles, combined with the Seq2GMM segment score on one calibrated scale.

The segment score (max of calibrated segment energies) sees local shape inside a cycle's
phases; a nearest-cycle distance sees the cycle as a whole, and an elastic one (DTW) or a
shift-free one (SBD) tolerates the jitter and phase shifts of quasi-periodic series. Each piece
of evidence becomes a robust z-score against normal scores that were NOT fitted on the cycle
being scored (the held-out or out-of-fold segment scores; the cross-fitted nearest distances
of :class:`~model.detectors.nearest.cycles.NearestCycles`), compressed by :func:`compress`, and
the window score is their mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from model.detectors.nearest.cycles import NearestCycles, cycle_points, robust_location_scale
from model.fitting import as_windows

_CYCLES = "evidence.cycles."
_SEG_LOC = "evidence.segment_loc"
_SEG_SCALE = "evidence.segment_scale"


def compress(z: np.ndarray) -> np.ndarray:
    """``sign(z) * log(1 + |z|)``: monotone, so each piece of evidence ranks as before, but
    one heavy-tailed score (a mixture energy far out in a tiny training set's tail) cannot
    outvote the others in the mean."""
    return np.sign(z) * np.log1p(np.abs(z))


class CycleEvidence:
    """The nearest-cycle references and the calibration of the segment score."""

    def __init__(self, cycles: NearestCycles, segment_loc: float, segment_scale: float) -> None:
        self.cycles = cycles
        self.segment_loc = float(segment_loc)
        self.segment_scale = float(segment_scale)

    @classmethod
    def fit(
        cls,
        windows: list[np.ndarray],
        segment_scores: np.ndarray,
        held_out: np.ndarray,
        *,
        metrics: Sequence[str],
        max_points: int,
        max_references: int,
        seed: int,
    ) -> tuple[CycleEvidence, np.ndarray]:
        """The evidence of the training ``windows`` and their (N,) combined scores, in which
        every nearest distance is cross-fitted and the segment score is calibrated on the
        ``held_out`` windows' scores (all windows' when none are held out)."""
        points = cycle_points(windows, max_points)
        cycles = NearestCycles(int(windows[0].shape[1]), list(metrics), points)
        distances = cycles.fit(windows, max_references, seed)
        ref = segment_scores[held_out] if held_out.size else segment_scores
        loc, scale = robust_location_scale(np.asarray(ref, dtype=np.float64)[:, None])
        evidence = cls(cycles, float(loc[0]), float(scale[0]))
        return evidence, evidence.combine_scores(segment_scores, distances)

    def combine(self, segment_scores: np.ndarray, windows: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) combined scores of ``windows`` ((L,) or (L, F) each) from their (N,) segment
        scores."""
        return self.combine_scores(segment_scores, self.distances(windows))

    def distances(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """(N, M) distance of each window to its nearest normal cycle, per metric."""
        wins = as_windows(windows, who="the cycle evidence", n_features=self.cycles.n_features)
        return self.cycles.distances(wins)

    def combine_scores(self, segment_scores: np.ndarray, distances: np.ndarray) -> np.ndarray:
        """(N,) combined scores from (N,) segment scores and their windows' (N, M) distances.

        Applied to each segment's own energy (with its window's distances) it gives that
        segment's evidence on the window score's scale: the score the window would have if
        this segment were its worst, so a segment above the threshold is one that alone makes
        its window anomalous."""
        seg = (np.asarray(segment_scores, dtype=np.float64) - self.segment_loc) / self.segment_scale
        z = np.concatenate([seg[:, None], self.cycles.zscores(distances)], axis=1)  # (N, 1 + M)
        return compress(z).mean(axis=1)

    def to(self, device: torch.device) -> CycleEvidence:
        self.cycles.to(device)
        return self

    # ------------------------------------------------------------------ checkpoint
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {
            _CYCLES + k: v.detach().cpu().contiguous().clone()
            for k, v in self.cycles.state_dict().items()
        }
        out[_SEG_LOC] = torch.tensor([self.segment_loc], dtype=torch.float64)
        out[_SEG_SCALE] = torch.tensor([self.segment_scale], dtype=torch.float64)
        return out

    @classmethod
    def restore(
        cls, tensors: Mapping[str, torch.Tensor], metrics: Sequence[str], n_features: int
    ) -> CycleEvidence | None:
        """The evidence saved by :meth:`tensors`, or None when the checkpoint has none."""
        if _SEG_LOC not in tensors:
            return None
        shape = tensors[_CYCLES + "cycles"].shape  # (R, P, F)
        cycles = NearestCycles(n_features, list(metrics), int(shape[1]), n_references=shape[0])
        state = {k[len(_CYCLES) :]: v for k, v in tensors.items() if k.startswith(_CYCLES)}
        cycles.load_state_dict(state, strict=True)
        cycles.eval()
        return cls(cycles, float(tensors[_SEG_LOC][0]), float(tensors[_SEG_SCALE][0]))
