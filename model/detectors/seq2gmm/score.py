"""From segment energies to window scores, localisation and calibration.

- :class:`EnergyNormaliser`: optional per-position calibration. Segment i of a quasi-periodic
  window always covers the same phase of the pattern, but the phases differ in length and
  shape, so their raw energies are not comparable (in the reference, on TwoLeadECG, the longest
  segment always wins the max). With ``energy_norm = "position"`` each energy becomes a robust
  z-score against the training energies of the same position: ``(E - median_i) / scale_i``
  with ``scale_i = 1.4826 * MAD_i`` (floored).
- :func:`aggregate`: window score = max (reference), mean, or length-weighted mean
  (``length_normalised``: the window's energy per sample) of its segments' energies.
- :class:`WindowScore`: the per-window result with each segment's energy and sample interval
  and the segment that decided (localisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.base import WindowScore
from model.errors import DataError


@dataclass
class EnergyNormaliser:
    """Per-position location and scale of training energies (identity when ``loc`` is empty)."""

    loc: torch.Tensor  # (P,) float64
    scale: torch.Tensor  # (P,) float64

    @classmethod
    def identity(cls) -> EnergyNormaliser:
        return cls(torch.zeros(0, dtype=torch.float64), torch.ones(0, dtype=torch.float64))

    @classmethod
    def fit(
        cls, energies: torch.Tensor, positions: torch.Tensor, n_positions: int
    ) -> EnergyNormaliser:
        energies = energies.detach().cpu().to(torch.float64)
        positions = positions.detach().cpu()
        loc = torch.zeros(n_positions, dtype=torch.float64)
        scale = torch.ones(n_positions, dtype=torch.float64)
        spread_all = float((energies - energies.median()).abs().median()) * 1.4826
        floor = max(1e-6, 1e-3 * spread_all)
        for p in range(n_positions):
            e = energies[positions == p]
            if e.numel() == 0:
                raise DataError(f"no training segment at position {p}; cannot calibrate energies")
            med = e.median()
            loc[p] = med
            scale[p] = max(float((e - med).abs().median()) * 1.4826, floor)
        return cls(loc, scale)

    @property
    def active(self) -> bool:
        return self.loc.numel() > 0

    def apply(self, energies: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(S,) calibrated energies (float64)."""
        e = energies.to(torch.float64)
        if not self.active:
            return e
        if int(positions.max()) >= self.loc.numel():
            raise DataError(
                f"a window has more segments ({int(positions.max()) + 1}) than the model was"
                f" calibrated for ({self.loc.numel()}); segment with the model's n_segments"
            )
        loc = self.loc.to(e.device)[positions]
        scale = self.scale.to(e.device)[positions]
        return (e - loc) / scale


def aggregate(
    energies: torch.Tensor, window: torch.Tensor, lengths: torch.Tensor, n_windows: int, how: str
) -> torch.Tensor:
    """(N,) window scores from (S,) segment energies grouped by ``window`` (S,)."""
    e = energies.to(torch.float64)
    w = window.to(e.device)
    if how == "max":
        out = torch.full((n_windows,), -torch.inf, dtype=e.dtype, device=e.device)
        return out.scatter_reduce(0, w, e, reduce="amax", include_self=True)
    if how == "mean":
        out = torch.zeros(n_windows, dtype=e.dtype, device=e.device)
        return out.scatter_reduce(0, w, e, reduce="mean", include_self=False)
    if how == "length_normalised":
        ln = lengths.to(e.device).to(e.dtype)
        num = torch.zeros(n_windows, dtype=e.dtype, device=e.device).index_add(0, w, e * ln)
        den = torch.zeros(n_windows, dtype=e.dtype, device=e.device).index_add(0, w, ln)
        return num / den
    raise DataError(f"unknown aggregate {how!r}: use 'max', 'mean' or 'length_normalised'")


def window_results(
    scores: np.ndarray,
    energies: np.ndarray,
    raw: np.ndarray,
    window: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
) -> list[WindowScore]:
    """Group per-segment arrays (S,) into one :class:`WindowScore` per window."""
    results: list[WindowScore] = []
    order = np.argsort(window, kind="stable")
    bounds = np.searchsorted(window[order], np.arange(len(scores) + 1))
    for n in range(len(scores)):
        sel = order[bounds[n] : bounds[n + 1]]
        e = energies[sel]
        results.append(
            WindowScore(
                score=float(scores[n]),
                segment_energies=e.copy(),
                raw_energies=raw[sel].copy(),
                intervals=[(int(a), int(b)) for a, b in zip(start[sel], end[sel], strict=True)],
                top_segment=int(np.argmax(e)),
            )
        )
    return results
