"""VAELSTMDetector: the detector contract on small synthetic data (small configs, fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import (
    checkpoint_from_bytes,
    checkpoint_to_bytes,
    load_checkpoint,
    save_checkpoint,
)
from model.detectors.vae_lstm import VAELSTMConfig, VAELSTMDetector
from model.errors import DataError, NotFittedError
from model.evaluation.data import sliding_windows
from model.evaluation.synthetic import SyntheticConfig, generate
from model.kinds import make_detector

L = 96  # 12 sub-windows of 8 samples

SMALL = VAELSTMConfig(
    subwindow_length=8,
    n_subwindows=12,
    code_dim=4,
    conv_channels=(8, 16),
    hidden=32,
    lstm_sizes=(16,),
    vae_epochs=8,
    lstm_epochs=8,
    batch_size=64,
    vae_lr=3e-3,
    lstm_lr=3e-3,
    patience=None,
)


def _series(n_features: int = 1, seed: int = 0) -> np.ndarray:
    cfg = SyntheticConfig(
        n_series=1, n_cycles=40, period=32, anomaly_rate=0.0, n_features=n_features, seed=seed
    )
    return generate(cfg)[0].values  # (T, F)


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    return sliding_windows(_series(), L, 4).windows  # (N, 96)


@pytest.fixture(scope="module")
def fitted(windows: np.ndarray) -> VAELSTMDetector:
    torch.set_num_threads(1)
    return VAELSTMDetector(SMALL).fit(windows, seed=0)


# ------------------------------------------------------------------------------ config


def test_config_round_trip_and_errors() -> None:
    cfg = VAELSTMConfig(subwindow_length=None, conv_channels=(4, 8), lstm_sizes=(8, 8))
    d = cfg.to_dict()
    assert d["conv_channels"] == [4, 8] and d["subwindow_length"] is None
    assert VAELSTMConfig.from_dict(d) == cfg
    with pytest.raises(DataError, match="unknown VAE-LSTM config keys"):
        VAELSTMConfig.from_dict({"epochs": 3})
    with pytest.raises(DataError, match="n_subwindows"):
        VAELSTMConfig(n_subwindows=1)
    with pytest.raises(DataError, match="lstm_readout"):
        VAELSTMConfig.from_dict({"lstm_readout": "gru"})
    with pytest.raises(DataError, match="list of integers"):
        VAELSTMConfig.from_dict({"conv_channels": "8,16"})
    det = make_detector("vae-lstm", config={"vae_epochs": 2})
    assert isinstance(det, VAELSTMDetector) and det.config.vae_epochs == 2


# ------------------------------------------------------------------------------ contract


def test_shapes_calibration_and_summary(fitted: VAELSTMDetector, windows: np.ndarray) -> None:
    scores = fitted.score(windows[:10])
    assert scores.shape == (10,) and scores.dtype == np.float64
    assert np.all(np.isfinite(scores)) and np.all(scores >= 0)
    assert fitted.kind == "vae-lstm" and fitted.n_features == 1 and fitted.window_length == L
    assert fitted.has_threshold and fitted.threshold.method == "fpr"
    assert fitted.reference_scores is not None
    s = fitted.training_summary
    assert s["n_train_windows"] + s["n_validation_windows"] == len(windows)
    assert s["n_validation_windows"] == len(fitted.reference_scores) > 0
    assert s["subwindow_length"] == 8 and s["samples_dropped_at_start"] == 0
    assert s["epochs_run"] == len(fitted.history) == 16
    assert {"vae_loss", "val_vae_loss"} <= set(fitted.history[0])
    assert {"lstm_loss", "val_lstm_loss"} <= set(fitted.history[-1])
    assert 0.0 <= float(fitted.percentile(float(scores[0]))) <= 100.0


def test_planted_anomaly_ranks_first(fitted: VAELSTMDetector, windows: np.ndarray) -> None:
    test = windows[-20:].copy()
    test[7, 50:60] += 3.0  # a burst inside sub-windows 7..8 (predicted ones)
    scores = fitted.score(test)
    assert int(np.argmax(scores)) == 7
    assert scores[7] > 2 * np.median(scores)


def test_same_seed_same_scores_and_rng_untouched(windows: np.ndarray) -> None:
    cfg = VAELSTMConfig.from_dict({**SMALL.to_dict(), "vae_epochs": 2, "lstm_epochs": 2})
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = VAELSTMDetector(cfg).fit(windows[:60], seed=3).score(windows[:30])
    assert torch.equal(torch.get_rng_state(), before)
    b = VAELSTMDetector(cfg).fit(windows[:60], seed=3).score(windows[:30])
    c = VAELSTMDetector(cfg).fit(windows[:60], seed=4).score(windows[:30])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_scores_do_not_depend_on_the_batch(fitted: VAELSTMDetector, windows: np.ndarray) -> None:
    whole = fitted.score(windows[:40])
    parts = np.concatenate([fitted.score(windows[i : min(i + 7, 40)]) for i in range(0, 40, 7)])
    np.testing.assert_allclose(parts, whole, rtol=1e-5)
    np.testing.assert_array_equal(fitted.score(windows[:40]), whole)  # deterministic


def test_remainder_dropped_from_the_start(fitted: VAELSTMDetector) -> None:
    x = _series(seed=5)[:104, 0]
    base = fitted.score([x[8:]])
    longer = fitted.score([x])  # 104 samples: the first 8 are dropped
    np.testing.assert_array_equal(base, longer)
    y = x.copy()
    y[:8] = 100.0
    np.testing.assert_array_equal(fitted.score([y]), base)


def test_auto_subwindow_length_on_ucr_like_rows() -> None:
    rows = sliding_windows(_series()[:, 0], 82, 5).windows  # 82 = 12 * 6 + 10
    cfg = VAELSTMConfig.from_dict(
        {**SMALL.to_dict(), "subwindow_length": None, "vae_epochs": 1, "lstm_epochs": 1}
    )
    det = VAELSTMDetector(cfg).fit(rows, seed=0)
    assert det.config.subwindow_length == 6 and det.span == 72
    assert det.training_summary["samples_dropped_at_start"] == 10
    assert det.score(rows[:3]).shape == (3,)
    longer = sliding_windows(_series()[:, 0], 130, 5).windows  # refit: auto again, 130 // 12
    assert det.fit(longer, seed=0).config.subwindow_length == 10


def test_multivariate_windows() -> None:
    w = sliding_windows(_series(n_features=2), L, 6).windows  # (N, 96, 2)
    cfg = VAELSTMConfig.from_dict({**SMALL.to_dict(), "vae_epochs": 1, "lstm_epochs": 1})
    det = VAELSTMDetector(cfg).fit(w, seed=0)
    assert det.n_features == 2 and det.score(w[:4]).shape == (4,)
    with pytest.raises(DataError, match="features"):
        det.score([np.zeros((L, 3))])


def test_constant_windows_give_finite_scores() -> None:
    const = [np.full(L, 2.5) for _ in range(12)]
    cfg = VAELSTMConfig.from_dict({**SMALL.to_dict(), "vae_epochs": 1, "lstm_epochs": 1})
    det = VAELSTMDetector(cfg).fit(const, seed=0)
    scores = det.score([*const[:2], np.zeros(L)])
    assert np.all(np.isfinite(scores)) and det.has_threshold


def test_checkpoint_round_trip_is_bit_identical(
    fitted: VAELSTMDetector, windows: np.ndarray, tmp_path: Path
) -> None:
    expected = fitted.score(windows[:25])
    save_checkpoint(fitted, tmp_path / "m")
    loaded = load_checkpoint(tmp_path / "m")
    assert isinstance(loaded, VAELSTMDetector) and loaded.config == fitted.config
    np.testing.assert_array_equal(loaded.score(windows[:25]), expected)
    assert loaded.threshold == fitted.threshold
    assert loaded.quantiles == fitted.quantiles
    assert fitted.reference_scores is not None and loaded.reference_scores is not None
    np.testing.assert_array_equal(loaded.reference_scores, fitted.reference_scores)
    assert loaded.window_length == L and loaded.training_summary["subwindow_length"] == 8
    meta, weights = checkpoint_to_bytes(fitted)
    again = checkpoint_from_bytes(meta, weights)
    np.testing.assert_array_equal(again.score(list(windows[:25])), expected)


def test_bad_input_and_not_fitted(fitted: VAELSTMDetector) -> None:
    det = VAELSTMDetector(SMALL)
    with pytest.raises(NotFittedError):
        det.score([np.zeros(L)])
    with pytest.raises(DataError, match="no windows"):
        det.fit([])
    bad = np.zeros(L)
    bad[3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        det.fit([bad, np.zeros(L)])
    with pytest.raises(DataError, match="at least"):
        det.fit([np.zeros(50), np.zeros(50)])
    with pytest.raises(DataError, match="at least 96"):
        fitted.score([np.zeros(90)])
    with pytest.raises(DataError, match="feature count"):
        det.fit([np.zeros((L, 1)), np.zeros((L, 2))])
