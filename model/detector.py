"""The detector protocol shared by Seq2GMM and every baseline.

Kept deliberately tiny (after river): a detector learns from normal windows and gives each
window a score where higher means more anomalous. Thresholds live apart, in
:mod:`model.thresholds`, so the same scores can be cut at any operating point.

A window is a float array of shape (L,) or (L, F); windows in one call may differ in L but
not in F.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Self, runtime_checkable

import numpy as np


@runtime_checkable
class Detector(Protocol):
    """Learn normal behaviour from windows, then score windows (higher = more anomalous)."""

    #: short name used on the command line and in checkpoint metadata, e.g. "seq2gmm", "knn"
    kind: str

    def fit(self, windows: Sequence[np.ndarray], *, seed: int = 0, progress: bool = False) -> Self:
        """Train on (assumed normal) windows. Deterministic for a given seed on one device."""
        ...

    def score(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) float64 window scores; raises NotFittedError before fit/load."""
        ...
