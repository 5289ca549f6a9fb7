"""What the streaming core needs of the model it serves, and nothing more (no torch here).

The core only needs :class:`ServedModel`'s small surface (window geometry, a threshold, and
batch scoring with per-segment energies), so tests can serve a fake one;
:mod:`worker.registry.loader` adapts a checkpoint-loaded detector to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class SegmentScore:
    start_index: int  # first sample of the segment in its window (inclusive)
    end_index: int  # last sample (inclusive)
    energy: float


@dataclass(frozen=True)
class ScoredWindow:
    energy: float  # the window score
    percentile: float  # of the window score among the model's training scores, 0..100
    segments: tuple[SegmentScore, ...]


class ServedModel(Protocol):
    name: str
    version: int
    window_length: int
    hop: int
    n_features: int
    threshold: float

    def score(self, windows: Sequence[np.ndarray]) -> list[ScoredWindow]:
        """Score a microbatch of (L, F) windows in one call."""
        ...
