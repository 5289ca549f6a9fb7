"""What the streaming core needs of the model it serves, and nothing more (no torch here).

The core only needs :class:`ServedModel`'s small surface (the cutter that cuts each series into
the model's windows, their width, a threshold, and batch scoring with per-segment energies), so
tests can serve a fake one;
:mod:`worker.registry.loader` adapts a checkpoint-loaded detector to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from model.cycles import Cutter
from model.errors import Seq2GMMError


class ScoringUnavailableError(Seq2GMMError):
    """The model cannot score at all right now (e.g. its scoring process died twice), which is
    no window's fault: the core re-raises it instead of dead-lettering the batch, so the worker
    stops without committing past it and a restart scores the same records again."""


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
    cutter: Cutter  # how each series is cut into the windows this model scores
    n_features: int
    threshold: float

    def score(self, windows: Sequence[np.ndarray]) -> list[ScoredWindow]:
        """Score a microbatch of (L_i, F) windows in one call (lengths may differ)."""
        ...
