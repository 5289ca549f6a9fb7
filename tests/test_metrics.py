"""Metrics equal scikit-learn's (ties included) and the point-adjust protocol."""

from __future__ import annotations

import numpy as np
import pytest

from model.errors import DataError
from model.evaluation.metrics import (
    anomaly_segments,
    best_f1,
    best_point_adjusted_f1,
    point_adjust,
    point_adjusted_f1,
    point_adjusted_scores,
    pr_auc,
    precision_recall_f1,
    roc_auc,
)

sk_metrics = pytest.importorskip("sklearn.metrics")


def _cases(n_cases: int = 60) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random labelled score sets, half of them with many ties (few distinct values)."""
    rng = np.random.default_rng(1234)
    out = []
    while len(out) < n_cases:
        n = int(rng.integers(2, 300))
        y = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(np.int64)
        if y.min() == y.max():
            continue
        if len(out) % 2:
            s = rng.integers(0, int(rng.integers(1, 12)), n).astype(np.float64)
        else:
            s = rng.normal(size=n) + y * rng.uniform(0, 2)
        out.append((y, s))
    return out


def test_roc_auc_and_pr_auc_equal_sklearn() -> None:
    for y, s in _cases():
        assert roc_auc(y, s) == pytest.approx(sk_metrics.roc_auc_score(y, s), abs=1e-12)
        assert pr_auc(y, s) == pytest.approx(sk_metrics.average_precision_score(y, s), abs=1e-12)


def test_known_values() -> None:
    y = [0, 0, 1, 1]
    assert roc_auc(y, [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc(y, [1, 1, 1, 1]) == 0.5  # one tie group: the diagonal
    assert pr_auc(y, [0.1, 0.4, 0.35, 0.8]) == pytest.approx((1 + 2 / 3) / 2)
    assert roc_auc(y, [4, 3, 2, 1]) == 0.0


def test_precision_recall_f1_equal_sklearn() -> None:
    for y, s in _cases(30):
        for t in np.quantile(s, [0.1, 0.5, 0.9]):
            got = precision_recall_f1(y, s, float(t))
            pred = (s > t).astype(int)
            assert got.precision == pytest.approx(
                sk_metrics.precision_score(y, pred, zero_division=0), abs=1e-12
            )
            assert got.recall == pytest.approx(sk_metrics.recall_score(y, pred), abs=1e-12)
            assert got.f1 == pytest.approx(sk_metrics.f1_score(y, pred, zero_division=0), abs=1e-12)
            assert got.tp + got.fn == y.sum()


def test_best_f1_is_the_max_over_sklearn_pr_curve() -> None:
    for y, s in _cases():
        p, r, _ = sk_metrics.precision_recall_curve(y, s)
        with np.errstate(invalid="ignore", divide="ignore"):
            f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
        got = best_f1(y, s)
        assert got.f1 == pytest.approx(float(f.max()), abs=1e-12)
        # the reported threshold reproduces it with the score > threshold rule
        assert precision_recall_f1(y, s, got.threshold).f1 == pytest.approx(got.f1, abs=1e-15)


def test_anomaly_segments() -> None:
    assert anomaly_segments([0, 1, 1, 0, 0, 1, 0, 1]) == [(1, 3), (5, 6), (7, 8)]
    assert anomaly_segments([0, 0]) == []


def test_point_adjust_flags_whole_detected_segments() -> None:
    y = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0, 1])
    pred = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    adj = point_adjust(y, pred)
    np.testing.assert_array_equal(adj, [1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    scores = np.where(pred, 1.0, 0.0)
    r = point_adjusted_f1(y, scores, 0.5)
    assert (r.tp, r.fp, r.fn) == (3, 1, 3)
    assert r.f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 3))


def test_point_adjusted_scores_match_brute_force() -> None:
    rng = np.random.default_rng(7)
    for _ in range(6):
        n = 80
        y = np.zeros(n, dtype=int)
        for start in rng.integers(0, n - 10, 4):
            y[start : start + rng.integers(1, 10)] = 1
        s = rng.normal(size=n) + y
        adjusted = point_adjusted_scores(y, s)
        best = 0.0
        for t in np.unique(s):
            pred = point_adjust(y, s > t)
            brute = sk_metrics.f1_score(y, pred.astype(int), zero_division=0)
            assert point_adjusted_f1(y, s, float(t)).f1 == pytest.approx(brute, abs=1e-12)
            best = max(best, brute)
        best = max(best, sk_metrics.f1_score(y, np.ones(n, dtype=int)))
        assert best_point_adjusted_f1(y, s).f1 == pytest.approx(best, abs=1e-12)
        assert np.all(adjusted >= s)


@pytest.mark.parametrize(
    ("labels", "scores", "match"),
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "both normal"),
        ([1, 1], [0.1, 0.2], "both normal"),
        ([0, 2], [0.1, 0.2], "0 .normal. or 1"),
        ([0, 1], [0.1, np.nan], "NaN"),
        ([0, 1, 1], [0.1, 0.2], "same length"),
        ([], [], "same length|no samples"),
    ],
)
def test_bad_inputs(labels: list[int], scores: list[float], match: str) -> None:
    with pytest.raises(DataError, match=match):
        roc_auc(labels, scores)
    with pytest.raises(DataError, match=match):
        pr_auc(labels, scores)
