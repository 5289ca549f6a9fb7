"""The long-series protocol (model.evaluation.series): window -> point mapping, metrics, splits."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import pytest

from model.detectors.seq2gmm.config import default_config
from model.errors import DataError
from model.evaluation.metrics import precision_recall_f1
from model.evaluation.series import (
    SeriesSplit,
    best_f1_grid,
    evaluate_series,
    kpi_split,
    make_split,
    nab_split,
    paper_window_labels,
    paper_window_metrics,
    score_series,
    training_labels,
    window_to_point_scores,
)
from model.kinds import make_detector

# ------------------------------------------------------------------------------ helpers


class _LastValue:
    """A stub detector: the score of a window is its last sample (records what it saw)."""

    kind = "stub"

    def __init__(self) -> None:
        self.fit_calls: list[dict[str, Any]] = []
        self.batches: list[int] = []
        self.reference_scores = np.array([0.0, 1.0, 2.0, 3.0])

    def fit(
        self, windows: Sequence[np.ndarray], *, seed: int = 0, progress: bool = False, **kw: Any
    ) -> Self:
        self.fit_calls.append({"n": len(windows), "seed": seed, **kw})
        return self

    def score(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        self.batches.append(len(windows))
        return np.array([float(np.asarray(w)[-1, 0]) for w in windows])


class _Supervised(_LastValue):
    kind = "classifier"
    supervised = True


def _toy_split(**kw: Any) -> SeriesSplit:
    values = np.arange(40, dtype=np.float64)
    labels = np.zeros(40, dtype=np.int64)
    labels[[1, 25, 30, 31]] = 1
    args: dict[str, Any] = {
        "train_range": (0, 20),
        "test_ranges": [(20, 30), (30, 40)],
        "window": 3,
        "hop": 2,
    }
    args.update(kw)
    return make_split("toy", values, labels, **args)


def _synthetic_split(window: int = 64) -> SeriesSplit:
    """A clean sine-like series with one planted burst at rows 1500..1505 of its test part."""
    rng = np.random.default_rng(0)
    t = np.arange(2000)
    values = np.sin(2 * np.pi * t / 32) + 0.05 * rng.standard_normal(t.size)
    labels = np.zeros(t.size, dtype=np.int64)
    values[1500:1506] += 4.0
    labels[1500:1506] = 1
    return make_split(
        "synthetic",
        values,
        labels,
        train_range=(0, 1200),
        test_ranges=[(1200, 2000)],
        window=window,
        hop=1,
        train_hop=4,
    )


# ------------------------------------------------------------------------------ mapping


def test_window_to_point_scores_by_hand() -> None:
    # windows of 3 at starts 0, 2, 4, 6 end at 2, 4, 6, 8; points 0 and 1 have no window
    points, scores = window_to_point_scores(
        np.array([0, 2, 4, 6]), np.array([10, 20, 30, 40]), 3, 10
    )
    np.testing.assert_array_equal(points, np.arange(2, 10))
    np.testing.assert_array_equal(scores, [10, 10, 20, 20, 30, 30, 40, 40])
    # hop 1: each point gets the window ending AT it
    p1, s1 = window_to_point_scores(np.arange(5), np.arange(5) * 1.0, 4, 8)
    np.testing.assert_array_equal(p1, [3, 4, 5, 6, 7])
    np.testing.assert_array_equal(s1, [0, 1, 2, 3, 4])


def test_score_series_without_history_stays_inside_the_ranges() -> None:
    split = _toy_split()
    det = _LastValue()
    sc = score_series(det, split, batch=2, history=False)
    # range [20, 30): starts 20, 22, 24, 26 ; range [30, 40): starts 30, 32, 34, 36
    np.testing.assert_array_equal(sc.window_starts, [20, 22, 24, 26, 30, 32, 34, 36])
    np.testing.assert_array_equal(sc.window_range, [0, 0, 0, 0, 1, 1, 1, 1])
    # the stub's score is the window's last value = its end row
    np.testing.assert_array_equal(sc.window_scores, sc.window_starts + 2)
    # windows never span the border: the first 2 points of each range are excluded
    assert sc.n_excluded == 4
    np.testing.assert_array_equal(sc.points, [*range(22, 30), *range(32, 40)])
    # hop 2: point 23 still carries the window ending at 22, point 29 the one ending at 28
    np.testing.assert_array_equal(
        sc.point_scores, [22, 22, 24, 24, 26, 26, 28, 28, 32, 32, 34, 34, 36, 36, 38, 38]
    )
    np.testing.assert_array_equal(sc.point_labels, split.labels[sc.points])
    assert max(det.batches) <= 2


def test_score_series_with_history_scores_every_test_point() -> None:
    split = _toy_split(hop=1)
    sc = score_series(_LastValue(), split)  # history=True (default)
    # range [20, 30) starts at 18: the window ending at 20 uses rows 18, 19 of the training part
    assert sc.window_starts[0] == 18 and sc.n_excluded == 0
    np.testing.assert_array_equal(sc.points, np.arange(20, 40))
    np.testing.assert_array_equal(sc.point_scores, np.arange(20, 40))  # window ending AT t
    # the range at the very start of a series has no history: its first L - 1 points go
    start = make_split(
        "s", np.arange(30.0), np.r_[np.zeros(25), np.ones(5)], train_range=(10, 30),
        test_ranges=[(0, 10)], window=4,
    )  # fmt: skip
    sc = score_series(_LastValue(), start)
    assert sc.n_excluded == 3 and sc.points[0] == 3


def test_split_windows_and_labels() -> None:
    split = _toy_split(train_hop=5)
    np.testing.assert_array_equal(split.train_starts, [0, 5, 10, 15])
    assert split.train.shape == (4, 3, 1)
    np.testing.assert_array_equal(split.train_labels, [1, 0, 0, 0])  # row 1 is anomalous
    assert split.normal_train.shape == (3, 3, 1)
    np.testing.assert_array_equal(split.test_values[:, 0], np.arange(20, 40))
    np.testing.assert_array_equal(split.test_labels, split.labels[20:])
    with pytest.raises(DataError, match="ranges"):
        _toy_split(test_ranges=[(30, 50)])
    with pytest.raises(DataError, match="fewer than one window"):
        _toy_split(window=25)


def test_evaluate_series_fits_normal_windows_unless_supervised() -> None:
    split = _toy_split(train_hop=5)
    det = _LastValue()
    report = evaluate_series(det, split, seed=7, history=False)
    assert det.fit_calls == [{"n": 3, "seed": 7}]
    assert not report.supervised and report.n_train_windows == 3
    assert report.threshold_source == "reference_scores"
    assert report.n_points == 16 and report.n_excluded_points == 4 and not report.history
    sup = _Supervised()
    report = evaluate_series(sup, split, seed=1)
    call = sup.fit_calls[0]
    assert report.supervised and call["n"] == 4
    np.testing.assert_array_equal(call["labels"], [1, 0, 0, 0])
    forced = _LastValue()
    assert evaluate_series(forced, split, seed=0, labels_for_training=True).supervised


def test_training_labels_follow_the_label_rule() -> None:
    # windows of 3 samples at every start 0..22 of the training rows 0..24; labelled rows 1, 25
    split = _toy_split(train_hop=1, train_range=(0, 25))
    starts = split.train_starts.tolist()
    assert starts == list(range(23))
    any_ = training_labels(split, "any")
    np.testing.assert_array_equal(np.flatnonzero(any_), [0, 1])  # windows holding row 1
    assert training_labels(split, "last").sum() == 0  # row 1 ends no window of 3
    nxt = training_labels(split, "next")  # the row after the window
    np.testing.assert_array_equal(np.flatnonzero(nxt), [starts.index(22)])  # rows 22..24 -> 25
    with pytest.raises(DataError, match="label rule"):
        training_labels(split, "first")


def test_best_f1_grid_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(300) < 0.2).astype(np.int64)
    s = rng.random(300) + y * 0.5
    f1, thr = best_f1_grid(y, s, 50)
    grid = np.linspace(s.min(), s.max(), 50)
    brute = max(precision_recall_f1(y, s, float(t)).f1 for t in grid)
    assert f1 == pytest.approx(brute)
    assert precision_recall_f1(y, s, thr).f1 == pytest.approx(f1)


def test_paper_window_labels_and_adjustment() -> None:
    starts = np.arange(10)
    np.testing.assert_array_equal(
        paper_window_labels(starts, 3, [4]), [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    )
    values = np.zeros(30)
    labels = np.zeros(30, dtype=np.int64)
    labels[12:15] = 1
    split = make_split(
        "p",
        values,
        labels,
        train_range=(0, 10),
        test_ranges=[(10, 30)],
        window=3,
        paper_ranges=[(10, 30)],
        paper_anomalies=[14],
    )
    sc = score_series(_LastValue(), split)  # stub: score = value = 0 everywhere
    # replace the scores: only the window starting at 13 (ends 15) stands out
    scores = np.where(sc.window_starts == 13, 5.0, 1.0)
    sc = type(sc)(**{**sc.__dict__, "window_scores": scores})
    out = paper_window_metrics(split, sc)
    assert out is not None and out["n_anomalous_windows"] == 3  # starts 12, 13, 14
    assert out["n_windows"] == 18  # starts 10..27: the history windows (8, 9) do not count
    assert out["best_f1"] == pytest.approx(0.5)  # 1 of 3 windows flagged, no false alarm
    assert out["best_pa_f1"] == pytest.approx(1.0)  # augmented: the whole anomaly


# ------------------------------------------------------------------------------ detectors


def test_planted_anomaly_gets_the_top_point_scores() -> None:
    split = _synthetic_split()
    report = evaluate_series(make_detector("knn"), split, seed=0)
    sc = score_series(make_detector("knn").fit(list(split.normal_train)), split)
    top = sc.points[np.argsort(-sc.point_scores)[:20]]
    # streaming rule: the burst at 1500..1505 lifts the windows ENDING within 1500..1568
    assert np.all((top >= 1500) & (top < 1506 + split.window_length))
    # the labels mark only the burst; the windows after it score high too (false alarms)
    assert report.roc_auc > 0.9 and report.n_anomalous_points == 6
    # knn's own threshold: its leave-one-out reference distances at its threshold_fpr
    assert report.threshold_source == "detector"


def test_vae_lstm_and_seq2gmm_run_the_protocol() -> None:
    split = _synthetic_split(window=96)
    vae = make_detector(
        "vae-lstm",
        config={
            "subwindow_length": 8,
            "conv_channels": [8, 16],
            "hidden": 32,
            "lstm_sizes": [16],
            "vae_epochs": 6,
            "lstm_epochs": 6,
            "batch_size": 64,
            "vae_lr": 3e-3,
            "lstm_lr": 3e-3,
        },
    )
    report = evaluate_series(vae, split, seed=0, hop=2)
    assert report.detector == "vae-lstm" and report.threshold_source == "detector"
    assert report.hop == 2 and report.roc_auc > 0.8
    assert report.paper is None and report.n_train_windows == split.train.shape[0]

    cfg = default_config()
    cfg = cfg.replace(train=dataclasses.replace(cfg.train, epochs=3, patience=None))
    s2g = make_detector("seq2gmm", config=cfg)
    report = evaluate_series(s2g, split, seed=0, hop=8)
    assert report.detector == "seq2gmm" and np.isfinite(report.roc_auc)
    # history: the first window ends at row 1200, the first test point
    assert report.n_test_windows == len(range(1200 - 95, 2000 - 96 + 1, 8))
    assert report.n_excluded_points == 0 and report.n_points == 800


# ------------------------------------------------------------------------------ real files


def test_nab_split_against_the_files(shared_data: Path) -> None:
    split = nab_split(shared_data, "machine_temp", train_hop=4)
    assert split.train_range == (5000, 15500)
    assert split.test_ranges == ((0, 5000), (15500, 22695))
    assert split.paper_ranges == ((0, 5000),)
    assert split.values.shape == (22695, 1) and split.labels.shape == (22695,)
    assert split.train.shape == (len(range(0, 10500 - 576 + 1, 4)), 576, 1)
    assert split.train_labels.sum() == 0  # the paper's training rows are anomaly-free
    tr = split.values[5000:15500, 0]
    assert abs(tr.mean()) < 1e-9 and tr.std() == pytest.approx(1.0)
    # point labels = NAB's combined windows; anomaly rows (1-based) = NAB's points + 1
    nab = shared_data / "nab"
    stamps = [ln.split(",")[0] for ln in (nab / "realKnownCause" /
              "machine_temperature_system_failure.csv").read_text().splitlines()[1:]]  # fmt: skip
    points = json.loads((nab / "labels" / "combined_labels.json").read_text())[
        "realKnownCause/machine_temperature_system_failure.csv"
    ]
    rows0 = [stamps.index(p) for p in points]
    assert [r + 1 for r in rows0] == list(split.paper_anomalies)
    assert np.all(split.labels[rows0] == 1)
    assert split.labels.sum() == 4 * 567  # four windows of 567 rows
    paper = nab_split(shared_data, "machine_temp", test="paper", train_hop=50)
    assert paper.test_ranges == ((0, 5000),)
    other = nab_split(shared_data, "nyc_taxi", train_hop=100)
    assert other.test_ranges == other.paper_ranges == ((5500, 10320),)
    with pytest.raises(DataError, match="unknown NAB series"):
        nab_split(shared_data, "nope")


def test_kpi_split_against_the_files(shared_data: Path) -> None:
    split = kpi_split(shared_data, "cpu4", window=120, hop=1, train_hop=10)
    T, cut = 17568, int(0.7 * 17568)
    assert split.train_range == (0, cut) and split.test_ranges == ((cut, T),)
    assert split.train.shape == (len(range(0, cut - 120 + 1, 10)), 120, 1)
    assert 0 < split.train_labels.sum() < split.train.shape[0]
    assert np.all(split.normal_train.reshape(split.normal_train.shape[0], -1).shape[1] == 120)
    normal = split.values[:cut][split.labels[:cut] == 0, 0]
    assert abs(normal.mean()) < 1e-9 and normal.std() == pytest.approx(1.0)
    assert split.test_labels.sum() == split.labels[cut:].sum() > 0
