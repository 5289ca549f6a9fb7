"""The classifier's data: windows labelled from point labels, label checks, robust scaling and
the model inputs built from them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from model.detectors.classifier.config import LABEL_RULES, LabelRule
from model.errors import DataError
from model.evaluation.data import sliding_windows
from model.fitting import pad_windows
from model.segmentation.base import as_window

WINDOW_SCALE_FLOOR = 0.01  # window IQR floor, in robust-scaled units (1% of the global IQR)


class LabelledWindows(NamedTuple):
    """Windows cut from one series, labelled by a label rule."""

    windows: np.ndarray  # (N, L) or (N, L, F) float64
    labels: np.ndarray | None  # (N,) int64 0/1 (None without point labels)
    starts: np.ndarray  # (N,) int64 first sample of each window
    targets: np.ndarray  # (N,) int64 the point each window's label and score stand for


def window_targets(starts: np.ndarray, length: int, rule: LabelRule) -> np.ndarray:
    """The point each window stands for: its last point ("last", "any") or the next ("next")."""
    if rule not in LABEL_RULES:
        raise DataError(f"label rule must be one of {LABEL_RULES}, got {rule!r}")
    last = np.asarray(starts, dtype=np.int64) + int(length) - 1
    return last + 1 if rule == "next" else last


def labelled_windows(
    values: np.ndarray | Sequence[float],
    point_labels: np.ndarray | Sequence[int] | None,
    length: int,
    hop: int = 1,
    rule: LabelRule = "last",
) -> LabelledWindows:
    """Sliding windows of ``values`` with window labels from point labels by ``rule``.

    "last": the label of the window's last point; "next": of the point after the window (the
    last window, which has no next point, is dropped); "any": 1 if any point is anomalous.
    """
    if rule not in LABEL_RULES:
        raise DataError(f"label rule must be one of {LABEL_RULES}, got {rule!r}")
    w = sliding_windows(values, length, hop, labels=point_labels)  # validates everything
    targets = window_targets(w.starts, length, rule)
    keep = targets < np.shape(values)[0]
    if not np.any(keep):
        raise DataError(f"no window of {length} samples has a next point to label it by")
    labels: np.ndarray | None = None
    if point_labels is not None:
        if rule == "any":
            assert w.labels is not None
            labels = w.labels[keep]
        else:
            labels = np.asarray(point_labels).astype(np.int64)[targets[keep]]
    return LabelledWindows(w.windows[keep], labels, w.starts[keep], targets[keep])


def model_inputs(
    windows: list[np.ndarray],
    idx: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    window_norm: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, C) float32 zero-padded model inputs of windows ``idx`` and their (B,) lengths.

    C = F robust-scaled features, plus (``window_norm``) the same features centred on the
    window's median and divided by its inter-quartile range (floored at WINDOW_SCALE_FLOOR).
    """
    inputs = []
    for i in idx:
        g = (windows[i] - center) / scale  # (L, F)
        if window_norm:
            q25, med, q75 = np.quantile(g, [0.25, 0.5, 0.75], axis=0)
            g = np.concatenate([g, (g - med) / np.maximum(q75 - q25, WINDOW_SCALE_FLOOR)], 1)
        inputs.append(g)  # (L, C)
    return pad_windows(inputs, np.float32)


def robust_scaler(windows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature median and 25-75% inter-quantile range (1 where it is 0), float64 (F,)."""
    stacked = np.concatenate([as_window(w) for w in windows], axis=0)  # (sum L, F)
    q25, median, q75 = np.quantile(stacked, [0.25, 0.5, 0.75], axis=0)
    iqr = q75 - q25
    return median, np.where(iqr > 0, iqr, 1.0)


def check_labels(labels: Any, n: int) -> np.ndarray:
    if labels is None:
        raise DataError(
            "the classifier is supervised: pass labels=... (one 0/1 per window), e.g. from a"
            " CSV with a label column"
        )
    y = np.asarray(labels)
    if y.shape != (n,):
        raise DataError(f"labels must have shape ({n},), one per window; got {y.shape}")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not np.all(np.isin(y, (0, 1))):
        raise DataError("labels must be 0 (normal) or 1 (anomalous)")
    y = y.astype(np.int64)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == n:
        which = "anomalous (1)" if n_pos == 0 else "normal (0)"
        raise DataError(
            f"the classifier needs both normal and anomalous windows; there is no {which}"
            " window among the labels"
        )
    return y
