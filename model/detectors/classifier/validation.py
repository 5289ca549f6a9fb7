"""The classifier's held-out share of labelled training windows and the F1-optimal threshold
chosen on it (see "Validation and threshold" in :mod:`model.detectors.classifier.detector`)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from model.detectors.classifier.config import ClassifierConfig
from model.errors import DataError
from model.evaluation.metrics import binary_curve


class WindowSplit(NamedTuple):
    train: np.ndarray  # (n_train,) int64 window indices used for gradient steps
    validation: np.ndarray  # (n_val,) int64 held-out window indices (may be empty)
    method: str  # what was done, for the training summary


def _stratified(idx: np.ndarray, y: np.ndarray, frac: float, rng: np.random.Generator):
    """A seeded draw of about ``frac`` of ``idx`` from each class, at least one of each."""
    picked = []
    for c in (0, 1):
        members = idx[y[idx] == c]
        k = min(max(1, round(frac * members.size)), members.size - 1)
        picked.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(picked))


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < y.size


def split_windows(
    y: np.ndarray, cfg: ClassifierConfig, gap: int, rng: np.random.Generator
) -> WindowSplit:
    """Train / validation window indices by ``cfg.validation_split`` (see module docstring).

    Both shares keep at least one anomalous and one normal window; "blocked" falls back to
    a stratified "random" split when its blocks cannot give both shares both classes (e.g.
    all anomalies in one block).
    """
    n = y.size
    all_idx = np.arange(n, dtype=np.int64)
    frac = cfg.validation_fraction
    if frac == 0.0:
        return WindowSplit(all_idx, np.empty(0, dtype=np.int64), "none")
    if int(y.sum()) < 2 or int((1 - y).sum()) < 2:
        raise DataError(
            "a validation split needs at least 2 anomalous and 2 normal windows (one of each"
            " for training and for validation); label more data or set validation_fraction=0"
        )
    method: str = cfg.validation_split
    if method == "tail":
        n_val = max(1, round(frac * n))
        val = all_idx[n - n_val :]
        train = all_idx[: max(0, n - n_val - gap)]
        if not (_both_classes(y[train]) and _both_classes(y[val])):
            raise DataError(
                "validation_split='tail': the held-out tail or the training head lacks"
                " anomalous or normal windows; use validation_split='blocked'"
            )
        return WindowSplit(train, val, f"tail (gap {gap})")
    if method == "blocked":
        block = all_idx // cfg.validation_block
        n_blocks = int(block[-1]) + 1
        pos_block = np.zeros(n_blocks, dtype=np.int64)
        np.maximum.at(pos_block, block, y)
        if int(pos_block.sum()) >= 2:
            chosen = _stratified(np.arange(n_blocks), pos_block, frac, rng)
            is_val = np.isin(block, chosen)
            # purge: training windows within `gap` of a held-out window overlap it
            near = np.convolve(is_val.astype(np.int64), np.ones(2 * gap + 1, dtype=np.int64))
            near_val = near[gap : gap + n] > 0
            val, train = all_idx[is_val], all_idx[~near_val]
            if _both_classes(y[train]) and _both_classes(y[val]):
                return WindowSplit(
                    train, val, f"blocked ({cfg.validation_block} windows, gap {gap})"
                )
        method = "random (fallback: the blocks do not give both shares both classes)"
    val = _stratified(all_idx, y, frac, rng)
    train = np.setdiff1d(all_idx, val)
    return WindowSplit(train, val, method)


def f1_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) of the F1-optimal cut ``score > threshold`` on labelled scores.

    The threshold lies midway between the lowest flagged score and the next lower score, so
    it does not sit on a validation score's edge.
    """
    fps, tps, thr = binary_curve(labels, scores)
    n_pos = int(np.sum(labels))
    f1 = 2 * tps / (tps + fps + n_pos)
    i = int(np.argmax(f1))
    value = float(np.nextafter(thr[i], -np.inf))
    if i + 1 < thr.size:
        mid = 0.5 * (float(thr[i]) + float(thr[i + 1]))
        if float(thr[i + 1]) <= mid < float(thr[i]):
            value = mid
    return value, float(f1[i])
