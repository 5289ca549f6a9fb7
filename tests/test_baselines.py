"""Baseline detectors and the evaluation harness."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import numpy as np
import pytest
import torch

from model.base import Detector
from model.detectors.baselines import (
    IsolationForestDetector,
    LSTMAutoencoderDetector,
    OneClassSVMDetector,
)
from model.errors import DataError, NotFittedError, Seq2GMMError
from model.evaluation.data import OneClassSplit, ucr_one_class_split
from model.evaluation.oneclass import evaluate
from model.kinds import KINDS, make_detector
from model.thresholds import infer_threshold

L = 64


def _normal(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    t = np.arange(L)
    return [
        np.sin(2 * np.pi * t / 32.0 + rng.uniform(-0.3, 0.3)) + 0.1 * rng.normal(size=L)
        for _ in range(n)
    ]


def _planted() -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """40 normal training windows; 20 normal + 3 anomalous test windows and their labels."""
    rng = np.random.default_rng(0)
    train, test = _normal(rng, 40), _normal(rng, 20)
    for k in range(3):
        w = _normal(rng, 1)[0]
        w[16 + 8 * k : 32 + 8 * k] += 4.0  # a plateau no normal window has
        test.append(w)
    return train, test, np.r_[np.zeros(20, int), np.ones(3, int)]


def _small(kind: str) -> Detector:
    if kind == "lstm-ae":
        return LSTMAutoencoderDetector(hidden=16, steps=60)
    return make_detector(kind)


BASELINE_KINDS = ["iforest", "ocsvm", "knn", "lstm-ae"]


@pytest.mark.parametrize("kind", BASELINE_KINDS)
def test_planted_anomalies_rank_above_every_normal_window(kind: str) -> None:
    train, test, labels = _planted()
    det = _small(kind)
    assert isinstance(det, Detector) and det.kind == kind
    scores = det.fit(train, seed=0).score(test)
    assert scores.shape == (23,) and scores.dtype == np.float64
    assert scores[labels == 1].min() > scores[labels == 0].max()


@pytest.mark.parametrize("kind", BASELINE_KINDS)
def test_score_before_fit_is_not_fitted_error(kind: str) -> None:
    with pytest.raises(NotFittedError, match="fit"):
        _small(kind).score([np.zeros(L)])


@pytest.mark.parametrize("kind", ["iforest", "lstm-ae"])
def test_seeded_training_is_reproducible(kind: str) -> None:
    train, test, _ = _planted()
    a = _small(kind).fit(train, seed=3).score(test)
    b = _small(kind).fit(train, seed=3).score(test)
    c = _small(kind).fit(train, seed=4).score(test)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_lstm_ae_leaves_global_rng_alone_and_masks_padding() -> None:
    rng = np.random.default_rng(1)
    train = [np.sin(np.arange(n) / 4.0) for n in rng.integers(20, 40, 24)]
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    epochs: list[tuple[int, float]] = []
    det = LSTMAutoencoderDetector(
        hidden=8, steps=20, on_epoch=lambda e, loss: epochs.append((e, loss))
    )
    det.fit(train, seed=0)
    assert torch.rand(1) == expected_next  # the global torch RNG did not move
    assert len(epochs) == 20 and all(np.isfinite(loss) for _, loss in epochs)
    short, long_ = np.sin(np.arange(21) / 4.0), np.cos(np.arange(60) / 3.0)
    alone = det.score([short])
    together = det.score([short, long_])
    # padding a short window to a longer one in the same batch never changes its score
    assert together[0] == pytest.approx(alone[0], rel=1e-5)


def test_lstm_ae_handles_multivariate_windows() -> None:
    rng = np.random.default_rng(2)
    train = [rng.normal(size=(30, 3)) for _ in range(8)]
    det = LSTMAutoencoderDetector(hidden=8, steps=5).fit(train, seed=0)
    assert det.score(train).shape == (8,)
    with pytest.raises(DataError, match="trained on 3 features"):
        det.score([rng.normal(size=(30, 2))])


def test_equal_length_baselines_reject_unequal_windows() -> None:
    with pytest.raises(DataError, match="one length"):
        IsolationForestDetector().fit([np.zeros(10), np.zeros(12)])
    forest = IsolationForestDetector(n_estimators=5).fit([np.zeros(10), np.ones(10)])
    with pytest.raises(DataError, match=r"trained on windows of shape \(10, 1\)"):
        forest.score([np.zeros(11)])
    with pytest.raises(DataError, match="NaN"):
        forest.score([np.full(10, np.nan)])


def test_missing_sklearn_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.ensemble", None)
    monkeypatch.setitem(sys.modules, "sklearn.svm", None)
    train, _, _ = _planted()
    for det in (IsolationForestDetector(), OneClassSVMDetector()):
        with pytest.raises(Seq2GMMError, match=r"pip install 'seq2gmm-worker\[baselines\]'"):
            det.fit(train)


# ------------------------------------------------------------------ evaluation harness


class _Fixed:
    """A detector whose scores are the windows' first value: lets the test control them."""

    kind = "fixed"

    def fit(self, windows: Sequence[np.ndarray], *, seed: int = 0, progress: bool = False) -> Self:
        return self

    def score(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        return np.array([float(np.asarray(w).ravel()[0]) for w in windows])


def _split(train_first: list[float], test_first: list[float], labels: list[int]) -> OneClassSplit:
    return OneClassSplit(
        train=[np.array([v, 0.0]) for v in train_first],
        test=[np.array([v, 0.0]) for v in test_first],
        test_labels=np.array(labels),
        train_rows=np.arange(len(train_first)),
        test_rows=np.arange(len(test_first)),
        normal_label=0,
        name="toy",
    )


def test_evaluate_threshold_comes_from_training_scores_only() -> None:
    train = [float(v) for v in range(21)]
    a = evaluate(_Fixed(), _split(train, [1.0, 5.0, 18.5, 30.0], [0, 0, 1, 1]), seed=0)
    b = evaluate(_Fixed(), _split(train, [100.0, 200.0, 300.0, 0.0], [0, 0, 1, 1]), seed=0)
    expected = infer_threshold(np.arange(21.0), fpr=0.05)
    assert a.threshold == expected and b.threshold == expected
    assert a.threshold_reference == "train_scores"
    assert (a.roc_auc, a.pr_auc) == (1.0, 1.0)
    assert expected.value == pytest.approx(19.0)  # 0.95 quantile of 0..20
    assert (a.precision, a.recall) == (1.0, 0.5)  # only 30 > 19 is flagged
    d = a.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["threshold"]["method"] == "fpr" and d["n_anomalous"] == 2 and d["dataset"] == "toy"


def test_evaluate_uses_knn_leave_one_out_reference() -> None:
    train, test, labels = _planted()
    split = OneClassSplit(train, test, labels, np.arange(40), np.arange(23), 0, "planted")
    r = evaluate(make_detector("knn"), split, seed=0, threshold_fpr=0.1)
    assert r.threshold_reference == "reference_scores" and r.threshold.value > 0
    assert r.roc_auc == 1.0 and r.recall == 1.0
    assert (r.n_train, r.n_test, r.n_anomalous) == (40, 23, 3)


def test_make_detector_kinds_and_errors() -> None:
    assert set(KINDS) == {
        *("seq2gmm", "dagmm", "vae-lstm", "classifier"),
        *("iforest", "ocsvm", "knn", "lstm-ae"),
    }
    for kind in KINDS:
        det = make_detector(kind, seed=1)
        assert isinstance(det, Detector) and det.kind == kind
    forest = make_detector("iforest", config={"n_estimators": 7})
    assert isinstance(forest, IsolationForestDetector) and forest.n_estimators == 7
    valid = "valid kinds: seq2gmm, dagmm, vae-lstm, classifier, knn, iforest"
    with pytest.raises(Seq2GMMError, match=valid):
        make_detector("prophet")
    with pytest.raises(Seq2GMMError, match="neither 'default' nor a JSON file"):
        make_detector("dagmm", config="faithful")
    with pytest.raises(Seq2GMMError, match="bad config for the 'iforest' detector"):
        make_detector("iforest", config={"trees": 3})
    with pytest.raises(Seq2GMMError, match=r"unknown knn config keys \['k'\]"):
        make_detector("knn", config={"k": 3})  # 1-NN only: the k of the old baseline is gone
    with pytest.raises(Seq2GMMError, match="mapping"):
        make_detector("ocsvm", config="fast")


# ------------------------------------------------------------------ real data (known numbers)


@pytest.mark.parametrize(
    ("name", "auc"),
    [("TwoLeadECG", 0.850), ("ECG200", 0.839), ("GunPoint", 0.793), ("ECG5000", 0.994)],
)
def test_knn_reproduces_known_roc_auc(shared_data: Path, name: str, auc: float) -> None:
    split = ucr_one_class_split(shared_data / "ucr", name)
    report = evaluate(make_detector("knn"), split, seed=0)
    assert round(report.roc_auc, 3) == auc
