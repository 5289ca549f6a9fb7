"""Segmentation interface: cut windows into K contiguous, overlapping-by-one segments.

A window is a float array of shape ``(L,)`` or ``(L, F)``. A segmentation of a window with
K segments is a vector of K + 1 breakpoints ``b_0 = 0 < b_1 < ... < b_K = L - 1``; segment i
is ``y[b_i : b_{i+1} + 1]``, so neighbours share one sample (the reference's cut rule) and
segment i has ``b_{i+1} - b_i + 1`` samples.

Segmenters (:mod:`model.segmentation.dp`, the fast batched dynamic programme, and
:mod:`model.segmentation.pwlf`, the reference) implement :class:`Segmenter`; the scoring
networks consume a :class:`SegmentBatch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from model.errors import DataError


def as_window(window: np.ndarray | Sequence[float]) -> np.ndarray:
    """Return ``window`` as a float64 array of shape (L, F); (L,) becomes (L, 1)."""
    arr = np.asarray(window, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"a window must have shape (L,) or (L, F) with L, F >= 1, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DataError("a window contains NaN or infinite values; clean or drop it first")
    return arr


@dataclass(frozen=True)
class Segmentation:
    """Breakpoints of N windows. ``cuts[n]`` holds the K + 1 breakpoints of window n."""

    cuts: np.ndarray  # (N, K+1) int64, cuts[:, 0] == 0, cuts[:, -1] == L_n - 1

    def __post_init__(self) -> None:
        cuts = np.asarray(self.cuts)
        if cuts.ndim != 2 or cuts.shape[1] < 2:
            raise DataError(f"cuts must have shape (N, K+1) with K >= 1, got {cuts.shape}")
        if np.any(cuts[:, 0] != 0) or np.any(np.diff(cuts, axis=1) < 1):
            raise DataError("breakpoints must start at 0 and increase strictly")
        object.__setattr__(self, "cuts", cuts.astype(np.int64, copy=False))

    @property
    def n_segments(self) -> int:
        return int(self.cuts.shape[1] - 1)

    def __len__(self) -> int:
        return int(self.cuts.shape[0])

    def segments(self, window: np.ndarray, n: int) -> list[np.ndarray]:
        """The segments of window ``n`` (shape (len_i, F) each), neighbours sharing a sample."""
        w = as_window(window)
        b = self.cuts[n]
        if b[-1] != w.shape[0] - 1:
            raise DataError(
                f"window {n} has {w.shape[0]} samples but its last breakpoint is {b[-1]}"
            )
        return [w[b[i] : b[i + 1] + 1] for i in range(len(b) - 1)]


@dataclass
class SegmentBatch:
    """All segments of a batch of windows, zero-padded, with their true lengths.

    Padding never carries information: consumers must use ``lengths`` (or :meth:`mask`).
    """

    values: torch.Tensor  # (S, T_max, F) float32, zero-padded after lengths[s]
    lengths: torch.Tensor  # (S,) int64, true segment lengths (>= 1)
    window: torch.Tensor  # (S,) int64, index of the window each segment came from
    start: torch.Tensor  # (S,) int64, first sample of the segment in its window (inclusive)
    end: torch.Tensor  # (S,) int64, last sample of the segment in its window (inclusive)
    n_windows: int

    def mask(self) -> torch.Tensor:
        """(S, T_max) bool, True on real samples."""
        t = torch.arange(self.values.shape[1], device=self.lengths.device)
        return t[None, :] < self.lengths[:, None]

    def to(self, device: torch.device | str) -> SegmentBatch:
        return SegmentBatch(
            self.values.to(device),
            self.lengths.to(device),
            self.window.to(device),
            self.start.to(device),
            self.end.to(device),
            self.n_windows,
        )


def pack_segments(
    windows: Sequence[np.ndarray], segmentation: Segmentation, dtype: torch.dtype = torch.float32
) -> SegmentBatch:
    """Cut every window by its breakpoints and pack all segments into one padded batch."""
    if len(windows) != len(segmentation):
        raise DataError(f"{len(windows)} windows but {len(segmentation)} segmentations")
    pieces: list[np.ndarray] = []
    win_idx: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    width: int | None = None
    for n, window in enumerate(windows):
        w = as_window(window)
        if width is None:
            width = w.shape[1]
        elif w.shape[1] != width:
            raise DataError(f"window {n} has {w.shape[1]} features, expected {width}")
        b = segmentation.cuts[n]
        for i, seg in enumerate(segmentation.segments(w, n)):
            pieces.append(seg)
            win_idx.append(n)
            starts.append(int(b[i]))
            ends.append(int(b[i + 1]))
    if not pieces:
        raise DataError("no windows to segment")
    assert width is not None
    lengths = np.array([p.shape[0] for p in pieces], dtype=np.int64)
    values = np.zeros((len(pieces), int(lengths.max()), width), dtype=np.float64)
    for s, p in enumerate(pieces):
        values[s, : p.shape[0]] = p
    return SegmentBatch(
        values=torch.as_tensor(values, dtype=dtype),
        lengths=torch.as_tensor(lengths),
        window=torch.as_tensor(np.array(win_idx, dtype=np.int64)),
        start=torch.as_tensor(np.array(starts, dtype=np.int64)),
        end=torch.as_tensor(np.array(ends, dtype=np.int64)),
        n_windows=len(windows),
    )


@runtime_checkable
class Segmenter(Protocol):
    """Anything that cuts a batch of windows into ``n_segments`` segments each."""

    n_segments: int

    def segment(self, windows: Sequence[np.ndarray]) -> Segmentation:
        """Breakpoints for every window (windows may have different lengths)."""
        ...


def knots_to_cuts(knots: np.ndarray, lengths: np.ndarray | Sequence[int]) -> np.ndarray:
    """Breakpoints (N, K+1) from real inner knots (N, K-1) on x = 0..L_n-1, by the reference rule.

    Inner breakpoints are ``int(t)`` (truncation, as the reference does with pwlf's breaks), then
    made strictly increasing between 0 and L_n - 1 (pushed forward, then back) where truncation
    collapses two knots. Needs L_n >= K + 1.
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    knots = np.asarray(knots, dtype=np.float64).reshape(len(lengths), -1)  # (N, K-1)
    n_seg = knots.shape[1] + 1
    if np.any(lengths < n_seg + 1):
        short = int(lengths.min())
        raise DataError(
            f"a window of {short} samples cannot be cut into {n_seg} segments (needs at least "
            f"{n_seg + 1}); use longer windows or fewer segments"
        )
    if not np.all(np.isfinite(knots)):
        raise DataError("breakpoints contain NaN or infinite values")
    cuts = reference_cuts(np.trunc(knots).astype(np.int64), lengths)  # (N, K+1)
    for i in range(1, n_seg):  # forward: at least one sample after the previous breakpoint
        cuts[:, i] = np.maximum(cuts[:, i], cuts[:, i - 1] + 1)
    for i in range(n_seg - 1, 0, -1):  # backward: room before the next one
        cuts[:, i] = np.minimum(cuts[:, i], cuts[:, i + 1] - 1)
    return cuts


def reference_cuts(inner: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Full (N, K+1) breakpoints from inner breakpoints (N, K-1) and window lengths (N,)."""
    inner = np.asarray(inner, dtype=np.int64).reshape(len(lengths), -1)
    zeros = np.zeros((len(lengths), 1), dtype=np.int64)
    last = (np.asarray(lengths, dtype=np.int64) - 1)[:, None]
    return np.concatenate([zeros, inner, last], axis=1)
