"""Segmentation: cut windows into K contiguous segments (one per phase of a cycle).

- :mod:`~model.segmentation.base`: breakpoints, :class:`Segmentation`, :class:`SegmentBatch`;
- :mod:`~model.segmentation.dp`: the fast batched search (default, CPU or GPU), built on
  :mod:`~model.segmentation.pwl_moves` (the exact least-squares moves);
- :mod:`~model.segmentation.pwlf`: the reference (pwlf's differential evolution);
- :mod:`~model.segmentation.reference`: the reference's cached TwoLeadECG cuts.
"""

from __future__ import annotations

import torch

from model.errors import DataError
from model.segmentation.base import Segmenter
from model.segmentation.dp import DPSegmenter
from model.segmentation.pwlf import PwlfSegmenter

__all__ = ["make_segmenter"]


def make_segmenter(
    name: str, n_segments: int, *, seed: int = 0, device: str | torch.device = "cpu"
) -> Segmenter:
    """The segmenter called ``name``: "dp" (fast batched, default) or "pwlf" (reference)."""
    if name == "dp":
        return DPSegmenter(n_segments, device=device)
    if name == "pwlf":
        return PwlfSegmenter(n_segments, seed=seed)
    raise DataError(f"unknown segmenter {name!r}: use 'dp' (fast, default) or 'pwlf' (reference)")
