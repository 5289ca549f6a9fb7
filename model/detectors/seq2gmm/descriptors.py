"""What Seq2GMM knows of each segment beyond its samples: its position and window
(:class:`SegmentInfo`, computed once per batch of whole windows) and the hand-made descriptors
(length, position, level, spread, endpoints, slope, shape, context) appended to z.

Shapes: S segments in a batch, T the longest segment, F input features, W windows, m the
points a segment or window is resampled to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from model.errors import DataError
from model.segmentation.base import SegmentBatch


def resample_segments(values: torch.Tensor, lengths: torch.Tensor, m: int) -> torch.Tensor:
    """Each segment linearly resampled to m evenly spaced points over its own samples.

    values (S, T, F), lengths (S,) -> (S, m, F); reads only samples < length (no padding).
    """
    s, _, f = values.shape
    frac = torch.linspace(0.0, 1.0, m, device=values.device, dtype=values.dtype)  # (m,)
    pos = frac[None, :] * (lengths.to(values.dtype) - 1.0)[:, None]  # (S, m)
    lo = pos.floor().long().clamp_min(0)
    hi = torch.minimum(lo + 1, (lengths - 1)[:, None])
    w = (pos - lo.to(values.dtype))[..., None]  # (S, m, 1)
    v_lo = values.gather(1, lo[..., None].expand(s, m, f))
    v_hi = values.gather(1, hi[..., None].expand(s, m, f))
    return v_lo * (1.0 - w) + v_hi * w


def window_context(batch: SegmentBatch, m: int) -> torch.Tensor:
    """(S, m, F): each segment's whole window, linearly resampled to m points.

    The windows are stitched back from their segments (neighbours share a sample, so every
    sample of a window belongs to at least one segment); needs all segments of each window
    present (a window index with no segment at all, e.g. a held-out window, is skipped).
    """
    values = batch.values
    f = values.shape[2]
    win_len = torch.zeros(batch.n_windows, dtype=batch.end.dtype, device=batch.end.device)
    win_len = win_len.scatter_reduce(0, batch.window, batch.end + 1, reduce="amax")  # (W,)
    win_len = win_len.clamp_min(1)  # windows without segments: never gathered below
    full = values.new_zeros(batch.n_windows, int(win_len.max()), f)  # (W, L_max, F)
    seg, t = batch.mask().nonzero(as_tuple=True)  # every true sample of every segment
    full[batch.window[seg], batch.start[seg] + t] = values[seg, t]
    return resample_segments(full, win_len, m)[batch.window]  # (S, m, F)


def segment_descriptors(
    batch: SegmentBatch,
    info: SegmentInfo,
    values: torch.Tensor,
    names: Sequence[str],
    shape_points: int = 16,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hand-made per-segment features (S, D_extra) from the true samples of each segment.

    length: (len - 1) / (window length - 1); position: start / (window length - 1);
    level: mean per feature; spread: std per feature; endpoints: first and last sample per
    feature; slope: (last - first) / (len - 1) * (window length - 1) per feature;
    shape: the segment resampled to ``shape_points`` evenly spaced points, per feature (a
    length-free description of its shape, aligned across windows by the segmentation);
    context: the segment's whole window resampled (``context``, (S, m, F), in the same units as
    ``values``), so each position's mixture sees its segment together with the window around it.
    """
    if not names:
        return values.new_zeros(values.shape[0], 0)
    lengths = batch.lengths.to(values.device)
    mask = batch.mask().to(values.device)  # (S, T)
    win_len = info.window_length.to(values.device).to(values.dtype)  # (S,)
    span = (win_len - 1.0).clamp_min(1.0)
    n = lengths.to(values.dtype)[:, None]  # (S, 1)
    m = mask[..., None].to(values.dtype)  # (S, T, 1)
    idx = torch.arange(values.shape[0], device=values.device)
    first = values[:, 0, :]  # (S, F)
    last = values[idx, lengths - 1, :]  # (S, F)
    cols: list[torch.Tensor] = []
    for name in names:
        if name == "length":
            cols.append(((n[:, 0] - 1.0) / span)[:, None])
        elif name == "position":
            cols.append((batch.start.to(values.device).to(values.dtype) / span)[:, None])
        elif name == "level":
            cols.append((values * m).sum(1) / n)
        elif name == "spread":
            mean = (values * m).sum(1) / n  # (S, F)
            var = (((values - mean[:, None, :]) ** 2) * m).sum(1) / n
            cols.append(torch.sqrt(var + 1e-12))
        elif name == "endpoints":
            cols.extend([first, last])
        elif name == "slope":
            cols.append((last - first) / (n - 1.0).clamp_min(1.0) * span[:, None])
        elif name == "shape":
            shape = resample_segments(values, lengths, shape_points)  # (S, m, F)
            cols.append(shape.transpose(1, 2).reshape(values.shape[0], -1))  # (S, F * m)
        elif name == "context":
            if context is None:
                raise DataError("the context descriptor needs SegmentInfo.context")
            cols.append(context.transpose(1, 2).reshape(values.shape[0], -1))  # (S, F * m)
        else:
            raise DataError(f"unknown segment descriptor {name!r}")
    return torch.cat(cols, dim=1)


def window_lengths(batch: SegmentBatch) -> torch.Tensor:
    """(S,) length of the window each segment came from (needs all segments of each window)."""
    ends = torch.zeros(batch.n_windows, dtype=batch.end.dtype, device=batch.end.device)
    ends = ends.scatter_reduce(0, batch.window, batch.end, reduce="amax", include_self=True)
    return (ends + 1)[batch.window]


def segment_positions(batch: SegmentBatch) -> torch.Tensor:
    """(S,) index of each segment inside its window (0 = first), from the segments' starts."""
    s = batch.window.shape[0]
    key = batch.window * (int(batch.end.max()) + 2) + batch.start  # sorts by (window, start)
    order = torch.argsort(key, stable=True)
    w_sorted = batch.window[order]
    idx = torch.arange(s, device=batch.window.device)
    first = torch.full((batch.n_windows,), s, dtype=idx.dtype, device=idx.device)
    first = first.scatter_reduce(0, w_sorted, idx, reduce="amin", include_self=True)
    pos = torch.empty_like(idx)
    pos[order] = idx - first[w_sorted]
    return pos


@dataclass
class SegmentInfo:
    """Per-segment context computed once on a full batch (it survives sub-batching)."""

    position: torch.Tensor  # (S,) int64 index of the segment in its window
    window_length: torch.Tensor  # (S,) int64 length of its window
    context: torch.Tensor | None = None  # (S, m, F) its window resampled (raw input units)

    @classmethod
    def of(cls, batch: SegmentBatch, context_points: int = 0) -> SegmentInfo:
        context = window_context(batch, context_points) if context_points else None
        return cls(segment_positions(batch), window_lengths(batch), context)

    def select(self, idx: torch.Tensor) -> SegmentInfo:
        context = None if self.context is None else self.context[idx]
        return SegmentInfo(self.position[idx], self.window_length[idx], context)

    def to(self, device: torch.device | str) -> SegmentInfo:
        context = None if self.context is None else self.context.to(device)
        return SegmentInfo(self.position.to(device), self.window_length.to(device), context)


def segment_descriptors_width(
    names: Sequence[str], n_features: int, shape_points: int = 16, context_points: int = 8
) -> list[str]:
    """Column names of :func:`segment_descriptors` for ``names`` and F input features."""
    cols: list[str] = []
    for name in names:
        if name in ("length", "position"):
            cols.append(name)
        elif name == "endpoints":
            cols += [f"first{f}" for f in range(n_features)] + [
                f"last{f}" for f in range(n_features)
            ]
        elif name == "shape":
            cols += [f"shape{f}_{j}" for f in range(n_features) for j in range(shape_points)]
        elif name == "context":
            cols += [f"context{f}_{j}" for f in range(n_features) for j in range(context_points)]
        else:
            cols += [f"{name}{f}" for f in range(n_features)]
    return cols
