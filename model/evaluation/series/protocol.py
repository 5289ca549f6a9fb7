"""The long-series evaluation protocol shared by every detector (NAB and KPI series).

A long labelled series is split in time: a detector trains on windows of the training range,
then scores every sliding window of the test range(s). Window scores become point scores by
the streaming rule, and the metrics are computed on points. The splits are
:mod:`model.evaluation.series.splits`.

Point scores (online convention): window ``[s, s + L)`` is scored when its last point
``s + L - 1`` arrives. A point's score is the score of the latest window that ends at or before
it. With hop 1 that is the window ending AT the point. By default (``history=True``) the
windows of a test range may start up to ``L - 1`` rows before it, so its first points are
scored with the rows that precede them in the series. Those rows are the training rows in
every NAB and KPI split, as they would be in a stream that starts after training. Only points
with fewer than ``L - 1`` rows before them in the whole series have no complete window. They
are EXCLUDED from the point metrics and counted in ``n_excluded_points``: on NAB, rows
0..574 of machine_temp. With ``history=False`` windows stay inside the test range and the
first ``L - 1`` points of every range are excluded. A window never extends past the end of
its test range.

Metrics (:class:`SeriesReport`), all on the included test points and computed with
:mod:`model.evaluation.metrics`:

- ROC AUC, PR AUC (average precision);
- ``best_f1`` and ``best_pa_f1``: the best F1 and the best point-adjusted F1 over every distinct
  threshold. These are oracles: they look at the labels;
- ``best_f1_200`` and ``best_pa_f1_200``: the same over 200 evenly spaced thresholds from the
  minimum to the maximum score, the VAE-LSTM paper's way (a point is flagged when
  ``score > threshold``);
- F1 and point-adjusted F1 at the detector's own threshold. That threshold is inferred from
  normal training-side scores only, never from the test set (see :func:`evaluate_series`);
- for NAB splits, ``paper["best_f1"]`` and ``paper["best_pa_f1"]``: the VAE-LSTM notebook's
  exact window-level evaluation (see :func:`paper_window_metrics`), to compare with its
  published numbers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from model.base import Detector
from model.errors import DataError, Seq2GMMError
from model.evaluation.metrics import (
    best_f1,
    best_point_adjusted_f1,
    point_adjusted_scores,
    pr_auc,
    precision_recall_f1,
    roc_auc,
)
from model.evaluation.oneclass import reference_scores
from model.evaluation.series.splits import SeriesSplit
from model.thresholds import infer_threshold

PAPER_THRESHOLDS = 200  # the VAE-LSTM notebook's threshold grid
SCORE_BATCH = 1024  # test windows per detector.score call


# ---------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class SeriesScores:
    """Window and point scores of a split's test ranges.

    ``window_starts`` / ``window_scores`` cover every test window, with starts in original
    rows, and ``window_range`` gives the index of each window's test range. ``points``
    (original rows), ``point_scores`` and ``point_labels`` cover the included test points;
    ``n_excluded`` counts the points before the first complete window of each range.
    """

    window_starts: np.ndarray  # (W,) int64
    window_scores: np.ndarray  # (W,) float64
    window_range: np.ndarray  # (W,) int64
    points: np.ndarray  # (P,) int64
    point_scores: np.ndarray  # (P,) float64
    point_labels: np.ndarray  # (P,) int64
    n_excluded: int


def window_to_point_scores(
    starts: np.ndarray, scores: np.ndarray, length: int, end: int
) -> tuple[np.ndarray, np.ndarray]:
    """Streaming point scores from window scores of one range.

    Windows ``[starts[i], starts[i] + length)`` are sorted by start. Each point ``t`` from the
    first window's last point up to ``end`` (exclusive) gets the score of the latest window
    ending at or before ``t``. Returns ``(points, point_scores)``.
    """
    starts = np.asarray(starts, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if starts.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    ends = starts + length - 1
    points = np.arange(int(ends[0]), end, dtype=np.int64)
    latest = np.searchsorted(ends, points, side="right") - 1  # >= 0 since points >= ends[0]
    return points, scores[latest]


def score_series(
    detector: Detector,
    split: SeriesSplit,
    *,
    hop: int | None = None,
    history: bool = True,
    batch: int = SCORE_BATCH,
) -> SeriesScores:
    """Score the test windows (batched) and map window scores to points (see the module
    docstring). ``hop`` overrides ``split.hop``.

    ``history=True``: the windows of a test range ``[a, b)`` start at ``max(0, a - L + 1)``, so
    the first test points are scored with the rows that precede them in the series (the
    training rows, for NAB and KPI), as a stream would; only points with fewer than ``L - 1``
    rows before them in the whole series are excluded. ``history=False``: windows lie inside
    the test range and its first ``L - 1`` points are excluded.
    """
    h = split.hop if hop is None else hop
    if h < 1:
        raise DataError(f"hop must be >= 1, got {h}")
    L = split.window_length
    all_starts, all_scores, all_range = [], [], []
    pts, pscores, n_excluded = [], [], 0
    view = np.lib.stride_tricks.sliding_window_view(split.values, L, axis=0)  # (T-L+1, F, L)
    for r, (a, b) in enumerate(split.test_ranges):
        first = max(0, a - L + 1) if history else a
        if b - first < L:
            n_excluded += b - a
            continue
        starts = np.arange(first, b - L + 1, h, dtype=np.int64)
        scores = []
        for c in range(0, starts.size, batch):
            chunk = np.ascontiguousarray(np.moveaxis(view[starts[c : c + batch]], -1, 1))
            s = np.asarray(detector.score(list(chunk)), dtype=np.float64)
            if s.shape != (chunk.shape[0],):
                raise Seq2GMMError(
                    f"{detector.kind} returned scores of shape {s.shape} for {chunk.shape[0]}"
                    " windows; a detector must return one score per window"
                )
            scores.append(s)
        sc = np.concatenate(scores)
        p, ps = window_to_point_scores(starts, sc, L, b)
        inside = p >= a  # history windows may end before the range: their points are not tested
        p, ps = p[inside], ps[inside]
        n_excluded += (b - a) - p.size
        all_starts.append(starts)
        all_scores.append(sc)
        all_range.append(np.full(starts.size, r, dtype=np.int64))
        pts.append(p)
        pscores.append(ps)
    if not all_starts:
        raise DataError(
            f"no test range of {split.name} holds a full window of {L} samples; use a shorter"
            " window"
        )
    points = np.concatenate(pts)
    return SeriesScores(
        window_starts=np.concatenate(all_starts),
        window_scores=np.concatenate(all_scores),
        window_range=np.concatenate(all_range),
        points=points,
        point_scores=np.concatenate(pscores),
        point_labels=split.labels[points].astype(np.int64),
        n_excluded=n_excluded,
    )


# ---------------------------------------------------------------------------------- metrics


def best_f1_grid(
    labels: np.ndarray, scores: np.ndarray, n_thresholds: int = PAPER_THRESHOLDS
) -> tuple[float, float]:
    """Best F1 and its threshold over ``n_thresholds`` evenly spaced thresholds from the
    minimum to the maximum score (flagging ``score > threshold``), the VAE-LSTM paper's grid."""
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    best, best_t = 0.0, float(s.max())
    for t in np.linspace(s.min(), s.max(), n_thresholds)[::-1]:
        f1 = precision_recall_f1(y, s, float(t)).f1
        if f1 > best:
            best, best_t = f1, float(t)
    return best, best_t


def paper_window_labels(
    starts: np.ndarray, length: int, anomalies: Sequence[int] | np.ndarray
) -> np.ndarray:
    """(W,) 1 when window ``[s, s + length)`` contains an anomaly position.

    The paper's notebook uses its 1-based anomaly row numbers directly as 0-based positions,
    so each labelled position is one row after NAB's anomaly timestamp; kept as published.
    """
    s = np.asarray(starts, dtype=np.int64)[:, None]
    a = np.asarray(anomalies, dtype=np.int64)[None, :]
    return np.any((a >= s) & (a <= s + length - 1), axis=1).astype(np.int64)


def paper_window_metrics(split: SeriesSplit, scores: SeriesScores) -> dict[str, Any] | None:
    """The VAE-LSTM notebook's evaluation, on window scores (None without the paper's data).

    Its unit is a test window, not a point. A window is anomalous when it contains one of the
    paper's anomaly positions (:func:`paper_window_labels`), so each anomaly labels its
    ``L`` windows. The best F1 and the best point-adjusted F1 are taken over 200 evenly spaced
    thresholds between the minimum and the maximum window score. Point adjustment is the
    notebook's "augmented detection": all windows of an anomaly count as detected once one
    is. Only windows lying entirely inside ``split.paper_ranges`` count (no history rows), as in
    the notebook. With a test hop > 1 this is a subsample of the paper's hop-1 windows.
    """
    if not split.paper_ranges or not split.paper_anomalies:
        return None
    idx = [split.test_ranges.index(r) for r in split.paper_ranges if r in split.test_ranges]
    if not idx:
        return None
    lo = np.array([r[0] for r in split.test_ranges])[scores.window_range]
    hi = np.array([r[1] for r in split.test_ranges])[scores.window_range]
    keep = (
        np.isin(scores.window_range, idx)
        & (scores.window_starts >= lo)
        & (scores.window_starts + split.window_length <= hi)
    )
    starts, ws = scores.window_starts[keep], scores.window_scores[keep]
    y = paper_window_labels(starts, split.window_length, split.paper_anomalies)
    if y.sum() == 0 or y.sum() == y.size:
        return None
    f1, thr = best_f1_grid(y, ws)
    pa_scores = _paper_adjusted_scores(starts, ws, split.window_length, split.paper_anomalies)
    pa_f1, pa_thr = best_f1_grid(y, pa_scores)
    return {
        "best_f1": f1,
        "best_f1_threshold": thr,
        "best_pa_f1": pa_f1,
        "best_pa_f1_threshold": pa_thr,
        "n_windows": int(y.size),
        "n_anomalous_windows": int(y.sum()),
    }


def _paper_adjusted_scores(
    starts: np.ndarray, scores: np.ndarray, length: int, anomalies: tuple[int, ...]
) -> np.ndarray:
    """Window scores with each anomaly's windows raised to their maximum (the notebook's
    augmented detection as a score transform). Its window sets may overlap, unlike
    :func:`model.evaluation.metrics.point_adjusted_scores`' segments; a window in two sets takes the
    larger of the two maxima."""
    out = scores.copy()
    for a in anomalies:
        inside = (starts <= a) & (a <= starts + length - 1)
        if inside.any():
            out[inside] = np.maximum(out[inside], scores[inside].max())
    return out


@dataclass(frozen=True)
class SeriesReport:
    """Result of one :func:`evaluate_series` run (one detector, one split, one seed)."""

    detector: str
    dataset: str
    seed: int
    roc_auc: float
    pr_auc: float
    best_f1: float  # over every distinct threshold
    best_f1_precision: float
    best_f1_recall: float
    best_pa_f1: float  # point-adjusted, over every distinct threshold
    best_f1_200: float  # over 200 evenly spaced thresholds (the VAE-LSTM paper's grid)
    best_pa_f1_200: float
    threshold: float  # the detector's own, from normal training-side scores
    threshold_source: str  # "detector", "reference_scores" or "train_scores"
    precision: float  # at ``threshold``
    recall: float
    f1: float
    pa_f1: float  # point-adjusted F1 at ``threshold``
    paper: dict[str, Any] | None  # paper_window_metrics, NAB only
    n_train_windows: int
    n_test_windows: int
    n_points: int
    n_anomalous_points: int
    n_excluded_points: int
    window_length: int
    hop: int
    train_hop: int
    history: bool  # test windows may start in the rows before a test range
    supervised: bool
    train_seconds: float
    score_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def training_labels(split: SeriesSplit, rule: str = "any") -> np.ndarray:
    """(N,) 0/1 labels of ``split.train`` by a supervised detector's label rule: "any" point
    of the window anomalous, its "last" point (the point the window scores in the streaming
    rule), or the "next" point after it (the reference classifier's target)."""
    if rule == "any":
        return split.train_labels
    offsets = {"last": split.window_length - 1, "next": split.window_length}
    if rule not in offsets:
        raise DataError(f"label rule must be 'any', 'last' or 'next', got {rule!r}")
    rows = np.minimum(split.train_starts + offsets[rule], split.labels.shape[0] - 1)
    return split.labels[rows].astype(np.int64)


def evaluate_series(
    detector: Detector,
    split: SeriesSplit,
    *,
    seed: int,
    labels_for_training: bool = False,
    threshold_fpr: float = 0.01,
    hop: int | None = None,
    history: bool = True,
) -> SeriesReport:
    """Fit ``detector`` on the training windows (seeded), score the test ranges, report.

    Training data: detectors of a supervised kind (whose class declares ``supervised = True``,
    or any detector when ``labels_for_training``) are called as
    ``fit(split.train, labels=..., seed=seed)`` on every training window, labelled by the
    detector's ``config.label_rule`` when it has one (:func:`training_labels`), else 1 when
    any of the window's points is anomalous. Every other detector gets
    ``fit(split.normal_train, seed=seed)``: the windows without a labelled point.

    Threshold for the F1 at a fixed operating point: the detector's own when it has one
    (``has_threshold``, e.g. VAE-LSTM's held-out normal windows at its ``threshold_fpr``).
    Otherwise ``infer_threshold(fpr=threshold_fpr)`` on its normal reference scores: held-out
    or leave-one-out ones when it exposes ``reference_scores``, else its scores of its
    training windows. The test set never sets it.

    ``hop`` overrides the split's test hop; ``history`` is :func:`score_series`'. Scores are
    computed ``SCORE_BATCH`` windows at a time; point scores follow the streaming rule of the
    module docstring.
    """
    supervised = labels_for_training or bool(getattr(detector, "supervised", False))
    train, train_seconds = _fit(detector, split, seed=seed, supervised=supervised)
    threshold, source = _operating_threshold(detector, train, threshold_fpr)

    t0 = time.perf_counter()
    sc = score_series(detector, split, hop=hop, history=history)
    score_seconds = time.perf_counter() - t0

    y, s = sc.point_labels, sc.point_scores
    if y.sum() == 0 or y.sum() == y.size:
        raise DataError(
            f"{split.name}: the scored test points need both normal and anomalous labels"
        )
    return SeriesReport(
        detector=detector.kind,
        dataset=split.name,
        seed=seed,
        **_point_metrics(y, s, threshold),
        threshold=threshold,
        threshold_source=source,
        paper=paper_window_metrics(split, sc),
        n_train_windows=int(train.shape[0]),
        n_test_windows=int(sc.window_scores.size),
        n_points=int(y.size),
        n_anomalous_points=int(y.sum()),
        n_excluded_points=sc.n_excluded,
        window_length=split.window_length,
        hop=split.hop if hop is None else hop,
        train_hop=split.train_hop,
        history=history,
        supervised=supervised,
        train_seconds=train_seconds,
        score_seconds=score_seconds,
    )


def _fit(
    detector: Detector, split: SeriesSplit, *, seed: int, supervised: bool
) -> tuple[np.ndarray, float]:
    """Fit ``detector`` as :func:`evaluate_series` describes; returns (the training windows it
    saw, the seconds it took)."""
    if supervised:
        train = split.train
        if train.shape[0] == 0:
            raise DataError(f"{split.name}: no training windows")
        labels = training_labels(
            split, getattr(getattr(detector, "config", None), "label_rule", "any")
        )
        t0 = time.perf_counter()
        detector.fit(list(train), labels=labels, seed=seed)  # type: ignore[call-arg]
    else:
        train = split.normal_train
        if train.shape[0] == 0:
            raise DataError(
                f"{split.name}: every training window holds a labelled point; use a shorter"
                " window or a supervised detector"
            )
        t0 = time.perf_counter()
        detector.fit(list(train), seed=seed)
    return train, time.perf_counter() - t0


def _operating_threshold(detector: Detector, train: np.ndarray, fpr: float) -> tuple[float, str]:
    """(threshold, where it comes from): the detector's own, else inferred at ``fpr`` from
    its normal reference scores (never from the test set)."""
    if getattr(detector, "has_threshold", False):
        return float(detector.threshold.value), "detector"  # type: ignore[attr-defined]
    ref, source = reference_scores(detector, list(train))
    return infer_threshold(ref, fpr=fpr).value, source


def _point_metrics(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, Any]:
    """The :class:`SeriesReport` metrics of point labels ``y`` and point scores ``s``."""
    bf = best_f1(y, s)
    pa = point_adjusted_scores(y, s)
    at = precision_recall_f1(y, s, threshold)
    return {
        "roc_auc": roc_auc(y, s),
        "pr_auc": pr_auc(y, s),
        "best_f1": bf.f1,
        "best_f1_precision": bf.precision,
        "best_f1_recall": bf.recall,
        "best_pa_f1": best_point_adjusted_f1(y, s).f1,
        "best_f1_200": best_f1_grid(y, s)[0],
        "best_pa_f1_200": best_f1_grid(y, pa)[0],
        "precision": at.precision,
        "recall": at.recall,
        "f1": at.f1,
        "pa_f1": precision_recall_f1(y, pa, threshold).f1,
    }
