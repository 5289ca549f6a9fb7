"""Detection metrics in plain numpy, with scikit-learn's definitions and tie handling.

Labels are 0 (normal) / 1 (anomalous); scores are higher for more anomalous samples. Tied
scores form one operating point (as in ``sklearn.metrics.roc_curve``), so a metric never
depends on the order of tied samples.

Decision rule everywhere in this project: a sample is flagged when ``score > threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.errors import DataError


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1 of one decision, with its confusion counts."""

    precision: float
    recall: float
    f1: float
    threshold: float
    tp: int
    fp: int
    fn: int


def _check(
    labels: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise DataError(
            f"labels and scores must be 1-D of the same length, got {y.shape}, {s.shape}"
        )
    if y.size == 0:
        raise DataError("no samples to evaluate")
    if not np.all(np.isin(y, (0, 1))):
        raise DataError("labels must be 0 (normal) or 1 (anomalous)")
    if not np.all(np.isfinite(s)):
        raise DataError(
            "scores contain NaN or infinite values; the detector diverged or got bad input"
        )
    return y.astype(np.int64), s


def _need_both(y: np.ndarray, metric: str) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise DataError(
            f"{metric} needs both normal (0) and anomalous (1) samples; got only label {int(y[0])}"
        )


def binary_curve(
    labels: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fps, tps, thresholds)`` at each distinct score, highest first.

    ``tps[i]`` / ``fps[i]`` count the positives / negatives with ``score >= thresholds[i]``.
    """
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), y.size - 1]
    tps = np.cumsum(y_sorted)[last_of_tie].astype(np.float64)
    fps = (last_of_tie + 1) - tps
    return fps, tps, s_sorted[last_of_tie]


def roc_auc(labels: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float]) -> float:
    """Area under the ROC curve (ties count half), as ``sklearn.metrics.roc_auc_score``."""
    y, s = _check(labels, scores)
    _need_both(y, "ROC AUC")
    fps, tps, _ = binary_curve(y, s)
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    return float(np.trapezoid(tpr, fpr))


def pr_auc(labels: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float]) -> float:
    """Average precision, ``sum_i (R_i - R_{i-1}) P_i`` over distinct thresholds.

    The definition of ``sklearn.metrics.average_precision_score`` (no interpolation).
    """
    y, s = _check(labels, scores)
    _need_both(y, "PR AUC")
    fps, tps, _ = binary_curve(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _prf(tp: int, fp: int, fn: int, threshold: float) -> PRF:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return PRF(precision, recall, f1, float(threshold), tp, fp, fn)


def precision_recall_f1(
    labels: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float], threshold: float
) -> PRF:
    """Precision, recall and F1 of flagging ``score > threshold``; 0 where undefined."""
    y, s = _check(labels, scores)
    pred = s > threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    return _prf(tp, fp, fn, threshold)


def best_f1(labels: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float]) -> PRF:
    """The highest F1 over every threshold (an oracle: it looks at the labels).

    The returned threshold reproduces it with the ``score > threshold`` rule: it is the
    largest float below the lowest flagged score.
    """
    y, s = _check(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise DataError("best F1 needs at least one anomalous (1) sample")
    fps, tps, thresholds = binary_curve(y, s)
    f1 = 2 * tps / (tps + fps + n_pos)
    i = int(np.argmax(f1))
    tp, fp = int(tps[i]), int(fps[i])
    return _prf(tp, fp, n_pos - tp, float(np.nextafter(thresholds[i], -np.inf)))


def anomaly_segments(labels: np.ndarray | Sequence[int]) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges of the runs of consecutive 1s in ``labels``."""
    y = np.asarray(labels).astype(np.int64)
    edges = np.diff(np.r_[0, y, 0])
    return list(
        zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True)
    )


def point_adjust(
    labels: np.ndarray | Sequence[int], predictions: np.ndarray | Sequence[bool]
) -> np.ndarray:
    """Point adjustment (Xu et al., WWW 2018): a true anomalous segment with at least one
    flagged point is flagged entirely. Returns the adjusted boolean predictions."""
    y = np.asarray(labels)
    pred = np.asarray(predictions, dtype=bool).copy()
    if pred.shape != y.shape:
        raise DataError(f"labels and predictions differ in shape: {y.shape} vs {pred.shape}")
    for a, b in anomaly_segments(y):
        if pred[a:b].any():
            pred[a:b] = True
    return pred


def point_adjusted_scores(
    labels: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float]
) -> np.ndarray:
    """Scores with every true anomalous segment raised to its maximum.

    Flagging ``adjusted > t`` equals point-adjusting the flags ``scores > t``, for every t,
    so the usual curve metrics on these scores are their point-adjusted versions.
    """
    y, s = _check(labels, scores)
    out = s.copy()
    for a, b in anomaly_segments(y):
        out[a:b] = s[a:b].max()
    return out


def point_adjusted_f1(
    labels: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float], threshold: float
) -> PRF:
    """Point-adjusted precision, recall and F1 of flagging ``score > threshold``."""
    return precision_recall_f1(labels, point_adjusted_scores(labels, scores), threshold)


def best_point_adjusted_f1(
    labels: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float]
) -> PRF:
    """The highest point-adjusted F1 over every threshold (an oracle, as :func:`best_f1`)."""
    return best_f1(labels, point_adjusted_scores(labels, scores))
