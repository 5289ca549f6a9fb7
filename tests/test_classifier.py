"""The supervised window classifier (model/classifier.py): contract, labels, threshold."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model.checkpoint import (
    checkpoint_from_bytes,
    checkpoint_to_bytes,
    load_checkpoint,
    save_checkpoint,
)
from model.detectors.classifier import (
    ClassifierConfig,
    WindowClassifierDetector,
    f1_threshold,
    labelled_windows,
    robust_scaler,
    split_windows,
    window_targets,
)
from model.errors import CheckpointError, DataError, NotFittedError
from model.evaluation.data import load_series_csv
from model.evaluation.metrics import roc_auc
from model.evaluation.synthetic import SyntheticConfig, generate
from model.kinds import detector_class, is_supervised, make_detector
from model.thresholds import Threshold

L = 24
ARCHS = ["bilstm", "lstm", "fcn"]


def _small(arch: str = "bilstm", **changes: object) -> ClassifierConfig:
    hidden = {"bilstm": (8,), "lstm": (8, 8), "fcn": (8, 16, 8)}[arch]
    base = ClassifierConfig(
        architecture=arch,  # type: ignore[arg-type]
        hidden=hidden,
        dense=8,
        dropout=0.0,
        epochs=12,
        batch_size=32,
        lr=1e-2,
        patience=None,
        validation_block=16,
        validation_gap=0,
        negatives_per_epoch=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _toy(
    n: int = 400, rate: float = 0.1, n_features: int = 1, seed: int = 0, bump: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy sines (N, L, F); anomalous windows (about ``rate``) end in a bump in feature 0."""
    rng = np.random.default_rng(seed)
    t = np.arange(L)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    x = np.sin(2 * np.pi * t[None, :, None] / 12.0 + phase) + 0.1 * rng.normal(
        size=(n, L, n_features)
    )
    y = (rng.random(n) < rate).astype(np.int64)
    y[:2], y[-2:] = 1, 0  # at least two of each
    x[y == 1, -4:, 0] += bump
    return x, y


@pytest.fixture(scope="module")
def toy() -> tuple[np.ndarray, np.ndarray]:
    return _toy()


@pytest.fixture(scope="module")
def fitted(toy: tuple[np.ndarray, np.ndarray]) -> dict[str, WindowClassifierDetector]:
    x, y = toy
    torch.set_num_threads(1)
    return {a: WindowClassifierDetector(_small(a)).fit(x, labels=y, seed=0) for a in ARCHS}


# ------------------------------------------------------------------ contract


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_planted_anomalies_rank_above_normals(
    arch: str, fitted: dict[str, WindowClassifierDetector]
) -> None:
    det = fitted[arch]
    assert det.kind == "classifier" and det.is_fitted
    x_test, y_test = _toy(n=120, seed=7)
    scores = det.score(x_test)
    assert scores.shape == (120,) and scores.dtype == np.float64
    assert scores[y_test == 1].min() > scores[y_test == 0].max()
    assert det.predict(list(x_test)).shape == (120,)
    prob = det.probability(x_test)
    assert np.all((prob >= 0) & (prob <= 1))
    assert det.n_features == 1 and det.window_length == L and det.seed == 0
    s = det.training_summary
    assert s["n_windows"] == 400 and s["epochs_run"] == len(det.history) == 12
    assert {"epoch", "loss", "val_loss", "val_pr_auc"} <= set(det.history[0])
    assert det.score_detailed(list(x_test[:2]))[0].percentile is not None


def test_list_input_equals_array_input(fitted: dict[str, WindowClassifierDetector]) -> None:
    x, _ = _toy(n=10, seed=3)
    det = fitted["bilstm"]
    np.testing.assert_array_equal(det.score(x), det.score(list(x)))
    np.testing.assert_array_equal(det.score(x[:, :, 0]), det.score([w[:, 0] for w in x]))


def test_multivariate_windows() -> None:
    x, y = _toy(n=300, n_features=3, seed=1)
    det = WindowClassifierDetector(_small("bilstm")).fit(x, labels=y, seed=0)
    assert det.n_features == 3 and det.center is not None and det.center.shape == (3,)
    x_test, y_test = _toy(n=80, n_features=3, seed=8)
    assert roc_auc(y_test, det.score(x_test)) > 0.95
    with pytest.raises(DataError, match="trained on 3"):
        det.score(x_test[:, :, :2])


@pytest.mark.parametrize("arch", ["bilstm", "fcn"])
def test_variable_length_windows_are_scored_as_if_alone(arch: str) -> None:
    rng = np.random.default_rng(0)
    x, y = _toy(n=200, seed=2)
    wins = [w[rng.integers(0, 8) :] for w in x]  # lengths 17..24, anomalies stay at the end
    det = WindowClassifierDetector(_small(arch, epochs=4)).fit(wins, labels=y, seed=0)
    assert det.window_length is None
    batch = det.score(wins[:20])
    alone = np.array([det.score([w])[0] for w in wins[:20]])
    np.testing.assert_allclose(batch, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_degenerate_windows_give_finite_scores(
    arch: str, fitted: dict[str, WindowClassifierDetector]
) -> None:
    det = fitted[arch]
    odd = [np.zeros(L), np.full(L, 1e6), np.full(L, -3.0), np.ones(3), np.ones(1)]
    assert np.all(np.isfinite(det.score(odd)))


def test_constant_feature_trains_with_unit_scale() -> None:
    x, y = _toy(n=200, n_features=2, seed=4)
    x[:, :, 1] = 5.0  # IQR 0 -> scale 1
    det = WindowClassifierDetector(_small("lstm", epochs=3)).fit(x, labels=y, seed=0)
    assert det.scale is not None and det.scale[1] == 1.0
    assert np.all(np.isfinite(det.score(x[:10])))


def test_robust_scaler_is_median_and_iqr() -> None:
    v = np.arange(1.0, 102.0)  # 1..101
    center, scale = robust_scaler([v[:50], v[50:]])
    assert center[0] == 51.0 and scale[0] == 50.0  # quartiles 26 and 76


@pytest.mark.parametrize("arch", ["bilstm", "fcn"])
def test_checkpoint_round_trip_is_bit_identical(
    arch: str, fitted: dict[str, WindowClassifierDetector], tmp_path: Path
) -> None:
    det = fitted[arch]
    x_test, _ = _toy(n=50, seed=9)
    save_checkpoint(det, tmp_path / "m")
    back = load_checkpoint(tmp_path / "m")
    assert isinstance(back, WindowClassifierDetector) and back.config == det.config
    np.testing.assert_array_equal(back.score(x_test), det.score(x_test))
    assert back.threshold == det.threshold and back.threshold.method == "f1"
    assert back.quantiles == det.quantiles
    assert back.reference_scores is not None and det.reference_scores is not None
    np.testing.assert_array_equal(back.reference_scores, det.reference_scores)
    assert back.window_length == L and back.seed == 0
    meta, weights = checkpoint_to_bytes(det)
    assert meta["kind"] == "classifier" and meta["label_rule"] == "last"
    again = checkpoint_from_bytes(meta, weights)
    np.testing.assert_array_equal(again.score(list(x_test)), det.score(x_test))
    bad = dict(meta, config={**meta["config"], "architecture": "transformer"})
    with pytest.raises(CheckpointError, match="config is invalid"):
        checkpoint_from_bytes(bad, weights)


def test_same_seed_same_scores_and_global_rng_untouched(
    toy: tuple[np.ndarray, np.ndarray], fitted: dict[str, WindowClassifierDetector]
) -> None:
    x, y = toy
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    det = WindowClassifierDetector(_small("bilstm")).fit(x, labels=y, seed=0)
    assert torch.equal(torch.rand(1), expected)
    np.testing.assert_array_equal(det.score(x[:40]), fitted["bilstm"].score(x[:40]))
    other = WindowClassifierDetector(_small("bilstm", epochs=2)).fit(x, labels=y, seed=1)
    assert not np.array_equal(other.score(x[:40]), det.score(x[:40]))


# ------------------------------------------------------------------ errors


def test_fit_without_labels_is_a_data_error(toy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = toy
    det = WindowClassifierDetector(_small())
    with pytest.raises(DataError, match=r"supervised: pass labels=\.\.\."):
        det.fit(x, seed=0)
    with pytest.raises(DataError, match="no anomalous"):
        det.fit(x, labels=np.zeros_like(y))
    with pytest.raises(DataError, match="no normal"):
        det.fit(x, labels=np.ones_like(y))
    with pytest.raises(DataError, match="one per window"):
        det.fit(x, labels=y[:-1])
    with pytest.raises(DataError, match=r"0 \(normal\) or 1"):
        det.fit(x, labels=y * 2)
    with pytest.raises(DataError, match="at least 2 anomalous"):
        det.fit(x, labels=np.r_[1, np.zeros(len(y) - 1, int)])
    assert not det.is_fitted


def test_bad_windows_and_not_fitted(fitted: dict[str, WindowClassifierDetector]) -> None:
    det = WindowClassifierDetector(_small())
    with pytest.raises(NotFittedError, match="fit"):
        det.score([np.zeros(L)])
    with pytest.raises(DataError, match="no windows"):
        det.fit([], labels=[])
    bad = np.zeros((3, L))
    bad[1, 4] = np.nan
    with pytest.raises(DataError, match=r"window 1 .*NaN"):
        fitted["lstm"].score(bad)
    with pytest.raises(DataError, match="window 1"):
        fitted["lstm"].score([np.zeros(L), np.array([1.0, np.inf])])
    with pytest.raises(DataError, match="no windows"):
        fitted["lstm"].score([])
    with pytest.raises(DataError, match="feature count"):
        fitted["lstm"].score([np.zeros((L, 1)), np.zeros((L, 2))])


def test_config_round_trip_and_validation() -> None:
    cfg = ClassifierConfig(architecture="fcn", hidden=(4, 5, 6), pos_weight=3.0)
    assert ClassifierConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(cfg.to_dict()["hidden"], list)
    assert ClassifierConfig().resolved_hidden == (100,)
    assert ClassifierConfig(architecture="fcn").resolved_hidden == (64, 128, 64)
    with pytest.raises(DataError, match="unknown classifier config keys"):
        ClassifierConfig.from_dict({"epochz": 3})
    cases: list[tuple[dict[str, Any], str]] = [
        ({"architecture": "gru"}, "architecture"),
        ({"pos_weight": "auto"}, "pos_weight"),
        ({"pos_weight": -1.0}, "pos_weight"),
        ({"label_rule": "first"}, "label_rule"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"architecture": "fcn", "hidden": [8, 8]}, "kernel size"),
        ({"epochs": 0}, "epochs"),
        ({"threshold_fpr": 0.0}, "threshold_fpr"),
    ]
    for bad, match in cases:
        with pytest.raises(DataError, match=match):
            ClassifierConfig.from_dict(bad)


def test_kind_registry_and_make_detector() -> None:
    assert is_supervised("classifier") and WindowClassifierDetector.supervised
    assert detector_class("classifier") is WindowClassifierDetector
    det = make_detector("classifier", config={"architecture": "lstm", "epochs": 2})
    assert isinstance(det, WindowClassifierDetector)
    assert det.config.architecture == "lstm" and det.config.epochs == 2


# ------------------------------------------------------------------ class weights, threshold


def test_class_weighting_makes_rare_positives_learnable() -> None:
    # ~3% anomalous windows: unweighted BCE learns to say "normal" (no anomalous test window
    # passes the reference's probability 0.5, i.e. logit 0); balanced weights find them.
    x, y = _toy(n=800, rate=0.02, seed=5, bump=1.2)
    x_test, y_test = _toy(n=400, rate=0.05, seed=6, bump=1.2)
    cfg = _small("bilstm", epochs=8, validation_fraction=0.0, window_norm=False, differences=False)
    plain = WindowClassifierDetector(dataclasses.replace(cfg, pos_weight=1.0))
    weighted = WindowClassifierDetector(cfg)
    plain.fit(x, labels=y, seed=0)
    weighted.fit(x, labels=y, seed=0)
    assert weighted.training_summary["pos_weight"] > 20
    assert weighted.training_summary["threshold_source"] == "training (in-sample)"
    s_plain, s_weighted = plain.score(x_test), weighted.score(x_test)
    assert np.mean(s_plain[y_test == 1] > 0.0) < 0.2
    assert np.mean(s_weighted[y_test == 1] > 0.0) > 0.8
    assert np.mean(s_weighted[y_test == 0] > 0.0) < 0.05
    assert roc_auc(y_test, s_weighted) > 0.95 > roc_auc(y_test, s_plain)


def test_threshold_comes_from_the_validation_windows_only(
    toy: tuple[np.ndarray, np.ndarray], fitted: dict[str, WindowClassifierDetector]
) -> None:
    x, y = toy
    det = fitted["bilstm"]
    assert det.split is not None
    val, train = det.split.validation, det.split.train
    assert val.size == det.training_summary["n_validation_windows"] > 0
    assert np.intersect1d(val, train).size == 0 and y[val].sum() > 0 and y[train].sum() > 0
    value, f1 = f1_threshold(y[val], det.score(x[val]))
    assert det.threshold == Threshold(value, "f1", f1, int(val.size))
    assert det.reference_scores is not None
    np.testing.assert_array_equal(det.reference_scores, det.score(x[val][y[val] == 0]))
    assert det.training_summary["threshold_source"] == "validation"


def test_fpr_threshold_option(toy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = toy
    det = WindowClassifierDetector(_small("lstm", epochs=2, threshold_fpr=0.05))
    det.fit(x, labels=y, seed=0)
    assert det.threshold.method == "fpr" and det.threshold.parameter == 0.05


def test_f1_threshold_sits_between_validation_scores() -> None:
    value, f1 = f1_threshold(np.array([0, 0, 1, 0, 1]), np.array([0.1, 0.2, 0.9, 0.4, 0.8]))
    assert f1 == 1.0 and value == pytest.approx(0.6)
    value, f1 = f1_threshold(np.array([1, 1]), np.array([0.3, 0.3]))
    assert f1 == 1.0 and value < 0.3


def test_f1_threshold_method_round_trips() -> None:
    t = Threshold(0.5, "f1", 0.8, 10)
    assert Threshold.from_dict(t.to_dict()) == t
    with pytest.raises(DataError, match="'fpr', 'quantile' or 'f1'"):
        Threshold(0.5, "magic", 0.8, 10)  # type: ignore[arg-type]


# ------------------------------------------------------------------ labels and splits


def test_label_rules() -> None:
    v = np.arange(10.0)
    lab = np.zeros(10, dtype=np.int64)
    lab[5] = 1
    last = labelled_windows(v, lab, 3, 1, "last")
    assert last.labels is not None and last.windows.shape == (8, 3)
    assert last.labels.tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    assert last.targets.tolist() == (last.starts + 2).tolist()
    nxt = labelled_windows(v, lab, 3, 1, "next")
    assert nxt.labels is not None and nxt.windows.shape == (7, 3)  # the last has no next
    assert nxt.labels.tolist() == [0, 0, 1, 0, 0, 0, 0] and nxt.targets[-1] == 9
    anyw = labelled_windows(v, lab, 3, 1, "any")
    assert anyw.labels is not None and anyw.labels.tolist() == [0, 0, 0, 1, 1, 1, 0, 0]
    assert labelled_windows(v, None, 3, 2).labels is None
    assert window_targets(np.array([0, 4]), 3, "next").tolist() == [3, 7]
    with pytest.raises(DataError, match="label rule"):
        labelled_windows(v, lab, 3, 1, "first")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="next point"):
        labelled_windows(v, lab, 10, 1, "next")


def test_blocked_split_is_stratified_and_purged() -> None:
    y = np.zeros(1000, dtype=np.int64)
    y[[50, 51, 300, 620, 621, 622, 900]] = 1
    cfg = ClassifierConfig(validation_block=100, validation_fraction=0.3)
    s = split_windows(y, cfg, gap=9, rng=np.random.default_rng(0))
    assert s.method.startswith("blocked")
    assert y[s.validation].sum() > 0 and y[s.train].sum() > 0
    _, counts = np.unique(s.validation // 100, return_counts=True)
    assert np.all(counts == 100)  # whole blocks
    dist = np.abs(s.train[:, None] - s.validation[None, :]).min(axis=1)
    assert dist.min() > 9  # no training window within the gap of a held-out one
    assert s.validation.size == 300
    # anomalies in a single block: falls back to a stratified random split
    y1 = np.zeros(1000, dtype=np.int64)
    y1[[10, 11, 12]] = 1
    s1 = split_windows(y1, cfg, gap=9, rng=np.random.default_rng(0))
    assert s1.method.startswith("random") and y1[s1.validation].sum() == 1
    tail = split_windows(
        y, dataclasses.replace(cfg, validation_split="tail"), 9, np.random.default_rng(0)
    )
    assert tail.validation.min() == 700 and tail.train.max() == 690
    none = split_windows(
        y, dataclasses.replace(cfg, validation_fraction=0.0), 9, np.random.default_rng(0)
    )
    assert none.validation.size == 0 and none.train.size == 1000


def test_fit_on_synthetic_series_with_point_labels() -> None:
    (series,) = generate(
        SyntheticConfig(n_series=1, n_cycles=60, period=32, anomaly_rate=0.2, kinds=("spike",))
    )
    lw = labelled_windows(series.values, series.point_labels, 16, 1, "last")
    assert lw.labels is not None and lw.labels.sum() >= 2
    det = WindowClassifierDetector(
        _small("fcn", epochs=3, validation_block=64, validation_gap=None)
    )
    det.fit(lw.windows, labels=lw.labels, seed=0)
    assert "gap 15" in det.training_summary["validation_split"]
    assert np.all(np.isfinite(det.score(lw.windows)))


def test_kpi_smoke(shared_data: Path) -> None:
    s = load_series_csv(shared_data / "kpi" / "cpu4.csv")
    assert s.labels is not None
    lw = labelled_windows(s.values[:4000], s.labels[:4000], 50, 2)
    det = WindowClassifierDetector(_small("lstm", epochs=1, negatives_per_epoch=256))
    det.fit(lw.windows, labels=lw.labels, seed=0)
    assert det.training_summary["negatives_per_epoch"] == 256
    assert np.all(np.isfinite(det.score(lw.windows[:100])))
