"""Automatic choice of the number of segments K by a Calinski-Harabasz search (optional).

The reference tries K = 1, 2, ... (up to 5): it cuts every training series into K segments, runs
k-means with K clusters on the segments and scores the clustering by the Calinski-Harabasz index
(between-cluster over within-cluster dispersion, each per degree of freedom); K = 1 scores -inf,
and the search stops at the first K whose score is lower than the best so far. The idea: with the
right K, the i-th segments of all series look alike and form K tight clusters.

Differences from the reference, on purpose: all segments are clustered (the reference keeps
only the first N/K of them), k-means is numpy (k-means++ starts, seeded, best of ``n_init``),
and the segmenter is any of ``make_segmenter``'s.

Featurisation (``features``):

* ``"pad"`` (the reference's): each segment's values, zero-padded to the longest segment, all
  features flattened. Segment length weighs heavily (long segments have many non-zero entries).
* ``"resample"``: each segment linearly resampled to ``n_points`` samples per feature, plus its
  length as a fraction of its window's: shape and relative duration, independent of padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.errors import DataError
from model.segmentation import Segmentation, as_window, make_segmenter


def segment_features(
    windows: Sequence[np.ndarray], seg: Segmentation, features: str = "pad", n_points: int = 16
) -> np.ndarray:
    """(N * K, D) one row per segment (window-major), see the module docstring."""
    rows: list[np.ndarray] = []
    for n, window in enumerate(windows):
        w = as_window(window)  # (L, F)
        for piece in seg.segments(w, n):
            if features == "pad":
                rows.append(piece)
            elif features == "resample":
                t = np.linspace(0.0, piece.shape[0] - 1.0, n_points)
                src = np.arange(piece.shape[0], dtype=np.float64)
                cols = [np.interp(t, src, piece[:, f]) for f in range(piece.shape[1])]
                rows.append(np.concatenate([*cols, [piece.shape[0] / w.shape[0]]]))
            else:
                raise DataError(f"unknown segment features {features!r}: use 'pad' or 'resample'")
    if features == "resample":
        return np.stack(rows)
    width = max(r.shape[0] for r in rows)
    out = np.zeros((len(rows), width * rows[0].shape[1]))
    for i, r in enumerate(rows):
        out[i, : r.size] = r.reshape(-1)
    return out


def kmeans(
    x: np.ndarray, k: int, *, seed: int = 0, n_init: int = 4, max_iter: int = 100
) -> tuple[np.ndarray, float]:
    """Lloyd's k-means with k-means++ starts: (labels (N,), within-cluster sum of squares)."""
    x = np.asarray(x, dtype=np.float64)  # (N, D)
    if not 1 <= k <= x.shape[0]:
        raise DataError(f"k-means needs 1 <= k <= {x.shape[0]} points, got k = {k}")
    rng = np.random.default_rng(seed)
    best_labels, best_inertia = np.zeros(x.shape[0], dtype=np.int64), np.inf
    for _ in range(n_init):
        centres = x[[rng.integers(x.shape[0])]]
        for _ in range(1, k):  # k-means++: next centre with probability ~ squared distance
            d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1).min(1)
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(x.shape[0], 1.0 / x.shape[0])
            centres = np.vstack([centres, x[rng.choice(x.shape[0], p=p)]])
        labels = np.full(x.shape[0], -1, dtype=np.int64)
        for _ in range(max_iter):
            d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)  # (N, k)
            new = d2.argmin(1)
            if np.array_equal(new, labels):
                break
            labels = new
            for c in range(k):
                members = x[labels == c]
                # an empty cluster restarts at the point farthest from its centre
                centres[c] = members.mean(0) if len(members) else x[d2.min(1).argmax()]
        inertia = float(((x - centres[labels]) ** 2).sum())
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    return best_labels, best_inertia


def calinski_harabasz(x: np.ndarray, labels: np.ndarray) -> float:
    """Calinski-Harabasz index; -inf when undefined (one cluster or one point per cluster)."""
    x = np.asarray(x, dtype=np.float64)
    ids = np.unique(labels)
    k, n = len(ids), x.shape[0]
    if k < 2 or n <= k:
        return float("-inf")
    mean = x.mean(0)
    between = sum(
        int((labels == c).sum()) * ((x[labels == c].mean(0) - mean) ** 2).sum() for c in ids
    )
    within = sum(((x[labels == c] - x[labels == c].mean(0)) ** 2).sum() for c in ids)
    if within == 0:
        return float("inf")
    return float(between / (k - 1) / (within / (n - k)))


@dataclass(frozen=True)
class SegmentCount:
    """Result of :func:`choose_n_segments`: the chosen K and the score of every K tried."""

    n_segments: int
    scores: dict[int, float]


def choose_n_segments(
    windows: Sequence[np.ndarray],
    method: str = "dp",
    *,
    max_segments: int = 5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    features: str = "pad",
    stop_at_first_drop: bool = True,
) -> SegmentCount:
    """Pick K in 1..max_segments by the Calinski-Harabasz score of k-means (K clusters) on the
    segments; K = 1 scores -inf. ``stop_at_first_drop`` is the reference's greedy stop."""
    if len(windows) == 0:
        raise DataError("choose_n_segments needs at least one window")
    scores: dict[int, float] = {}
    best_k, best = 1, float("-inf")
    for k in range(1, max_segments + 1):
        if k == 1:
            score = float("-inf")
        else:
            seg = make_segmenter(method, k, seed=seed, device=device).segment(windows)
            x = segment_features(windows, seg, features)
            score = (
                calinski_harabasz(x, kmeans(x, k, seed=seed)[0])
                if x.shape[0] > k
                else float("-inf")
            )
        scores[k] = score
        if score >= best:
            best_k, best = k, score
        elif stop_at_first_drop:
            break
    return SegmentCount(best_k, scores)
