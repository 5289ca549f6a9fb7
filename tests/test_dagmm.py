"""TS-DAGMM: energy against a numpy reference, padding independence, contract behaviour."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.base import CalibratedDetector, Detector
from model.checkpoint import (
    checkpoint_from_bytes,
    checkpoint_to_bytes,
    load_checkpoint,
    save_checkpoint,
)
from model.detectors.dagmm import (
    RECON_FEATURES,
    TSDAGMMConfig,
    TSDAGMMDetector,
    band_alignment_error,
    batch_mixture,
    mixture_energy,
    reconstruction_features,
)
from model.errors import CheckpointError, DataError, NotFittedError
from model.evaluation.synthetic import SyntheticConfig, generate
from model.gmm import safe_cholesky
from model.kinds import make_detector

# small and fast: the whole file runs in a few seconds on one core
SMALL = TSDAGMMConfig(
    hidden_size=8,
    num_layers=2,
    latent_dim=2,
    n_components=2,
    epochs=8,
    batch_size=16,
    lr=3e-3,
    patience=None,
)


def _normal(rng: np.random.Generator, n: int, length: int = 48, f: int = 1) -> list[np.ndarray]:
    t = np.arange(length)
    out = []
    for _ in range(n):
        base = np.sin(2 * np.pi * t / 24.0 + rng.uniform(-0.3, 0.3))[:, None]
        out.append(base * rng.uniform(0.9, 1.1, f) + 0.05 * rng.normal(size=(length, f)))
    return [w[:, 0] if f == 1 else w for w in out]


@pytest.fixture(scope="module")
def fitted() -> TSDAGMMDetector:
    rng = np.random.default_rng(0)
    return TSDAGMMDetector(SMALL).fit(_normal(rng, 40), seed=0)


# ------------------------------------------------------------------ config


def test_config_round_trip_and_errors() -> None:
    cfg = dataclasses.replace(SMALL, recon_features=("rd", "trend"), patience=5)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["recon_features"] == ["rd", "trend"]
    assert TSDAGMMConfig.from_dict(data) == cfg
    assert TSDAGMMConfig().n_components == 4 and TSDAGMMConfig().threshold_fpr == 0.01
    assert (TSDAGMMConfig().lambda_energy, TSDAGMMConfig().lambda_cov) == (0.1, 0.005)
    with pytest.raises(DataError, match="unknown TS-DAGMM config keys"):
        TSDAGMMConfig.from_dict({"hiden_size": 3})
    with pytest.raises(DataError, match="cov_floor must be > 0"):
        TSDAGMMConfig.from_dict({"cov_floor": 0.0})
    with pytest.raises(DataError, match="recon_features"):
        TSDAGMMConfig.from_dict({"recon_features": ["rd", "dtw"]})
    with pytest.raises(DataError, match="validation_fraction"):
        TSDAGMMConfig(validation_fraction=1.0)
    with pytest.raises(DataError, match="epochs must be an integer"):
        TSDAGMMConfig.from_dict({"epochs": "ten"})
    with pytest.raises(DataError, match="log_errors must be a boolean"):
        TSDAGMMConfig.from_dict({"log_errors": 1})
    with pytest.raises(DataError, match="batch_size >= 2"):
        TSDAGMMConfig(batch_size=1)
    assert TSDAGMMConfig.from_dict({"patience": None, "grad_clip": 1}).grad_clip == 1
    det = make_detector("dagmm", config={"epochs": 3})
    assert isinstance(det, TSDAGMMDetector) and det.config.epochs == 3
    assert isinstance(det, Detector) and isinstance(det, CalibratedDetector)
    assert det.kind == "dagmm" and TSDAGMMDetector.config_class is TSDAGMMConfig


# ------------------------------------------------------------------ the mixture and energy


def _numpy_energy(z: np.ndarray, phi: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """-log sum_k phi_k N(z; mu_k, Sigma_k) with an explicit inverse and determinant.

    The sum runs in log space (max + log sum exp) so far-away windows do not underflow.
    """
    n, _ = z.shape
    log_dens = np.zeros((n, len(phi)))
    for k in range(len(phi)):
        inv = np.linalg.inv(cov[k])
        det = np.linalg.det(2 * np.pi * cov[k])
        diff = z - mu[k]
        maha = np.einsum("nd,de,ne->n", diff, inv, diff)
        log_dens[:, k] = np.log(phi[k]) - 0.5 * maha - 0.5 * np.log(det)
    top = log_dens.max(1)
    return -(top + np.log(np.exp(log_dens - top[:, None]).sum(1)))


def test_batch_mixture_and_energy_match_numpy() -> None:
    rng = np.random.default_rng(3)
    n, d, k = 30, 4, 3
    z = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    gamma = rng.dirichlet(np.ones(k), size=n)
    floor = np.full(d, 1e-3)
    log_phi, mu, cov = batch_mixture(
        torch.as_tensor(z), torch.as_tensor(gamma), torch.as_tensor(floor)
    )
    nk = gamma.sum(0)
    mu_np = gamma.T @ z / nk[:, None]
    cov_np = np.stack(
        [
            (gamma[:, j, None] * (z - mu_np[j])).T @ (z - mu_np[j]) / nk[j] + np.diag(floor)
            for j in range(k)
        ]
    )
    np.testing.assert_allclose(log_phi.exp().numpy(), nk / n, rtol=1e-12)
    np.testing.assert_allclose(mu.numpy(), mu_np, rtol=1e-10)
    np.testing.assert_allclose(cov.numpy(), cov_np, rtol=1e-10, atol=1e-14)
    energy = mixture_energy(torch.as_tensor(z), log_phi, mu, safe_cholesky(cov))
    np.testing.assert_allclose(energy.numpy(), _numpy_energy(z, nk / n, mu_np, cov_np), rtol=1e-8)
    # the projected floor keeps Sigma >= diag(floor): no eigenvalue of the whitened cov below 1
    _, _, proj = batch_mixture(
        torch.as_tensor(z), torch.as_tensor(gamma), torch.full((d,), 10.0), project=True
    )
    assert torch.linalg.eigvalsh(proj - 10.0 * torch.eye(d, dtype=torch.float64)).min() > -1e-9


def test_detector_score_is_the_energy_of_its_features(fitted: TSDAGMMDetector) -> None:
    rng = np.random.default_rng(5)
    test = [*_normal(rng, 6), np.zeros(48)]
    z = fitted.features(test)
    assert z.shape == (7, SMALL.z_dim) and z.dtype == np.float64
    assert fitted.model is not None
    mix = fitted.model.mixture
    phi = mix.log_weights.exp().numpy()
    cov = (mix.chol @ mix.chol.transpose(1, 2)).numpy()
    expected = _numpy_energy(z, phi, mix.means.numpy(), cov)
    np.testing.assert_allclose(fitted.score(test), expected, rtol=1e-8)
    assert np.isclose(phi.sum(), 1.0)


# ------------------------------------------------------------------ features and padding


def test_reconstruction_features_ignore_padding() -> None:
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.normal(size=(2, 12, 2)), dtype=torch.float64)
    r = x + 0.1 * torch.as_tensor(rng.normal(size=(2, 12, 2)))
    lengths = torch.tensor([7, 12])
    names = list(RECON_FEATURES)
    got = reconstruction_features(x, r, lengths, names, band=0.2, eps=1e-2)
    x2, r2 = x.clone(), r.clone()
    x2[0, 7:], r2[0, 7:] = 99.0, -99.0  # garbage in the padding
    again = reconstruction_features(x2, r2, lengths, names, band=0.2, eps=1e-2)
    alone = reconstruction_features(x[:1, :7], r[:1, :7], lengths[:1], names, band=0.2, eps=1e-2)
    torch.testing.assert_close(got, again, rtol=0, atol=0)
    torch.testing.assert_close(got[:1], alone, rtol=1e-12, atol=1e-12)
    err = (r[1] - x[1]).numpy()
    mse, mae = float((err**2).mean()), float(np.abs(err).mean())
    trend = float(np.abs(np.diff(err, axis=0)).mean())
    np.testing.assert_allclose(got[1, [2, 3, 5]].numpy(), [mse, mae, trend], rtol=1e-12)


def test_band_alignment_error_forgives_small_shifts() -> None:
    t = torch.arange(40, dtype=torch.float64)
    x = torch.sin(2 * np.pi * t / 20)[None, :, None]
    y = torch.sin(2 * np.pi * (t - 1) / 20)[None, :, None]  # one-step phase shift
    lengths = torch.tensor([40])
    mae = float((x - y).abs().mean())
    assert float(band_alignment_error(x, y, lengths, 0.0)) == pytest.approx(mae, rel=1e-12)
    assert float(band_alignment_error(x, y, lengths, 0.05)) < 0.1 * mae
    assert float(band_alignment_error(x, x, lengths, 0.05)) == 0.0


def test_padding_does_not_leak_into_scores(fitted: TSDAGMMDetector) -> None:
    rng = np.random.default_rng(7)
    short = _normal(rng, 1, length=30)[0]
    longer = _normal(rng, 3, length=70)
    alone = fitted.score([short])
    together = fitted.score([longer[0], short, longer[1], longer[2]])
    # same window, different padding and batch: the fitted network scores in float64, so only
    # round-off of batched arithmetic (~1e-15) may differ
    np.testing.assert_allclose(together[1], alone[0], rtol=1e-12)
    np.testing.assert_allclose(
        fitted.features([short])[0], fitted.features([*longer, short])[3], rtol=0, atol=1e-12
    )
    assert fitted.model is not None and fitted.model.to_code.weight.dtype == torch.float64


# ------------------------------------------------------------------ detector behaviour


def test_shapes_history_and_summary(fitted: TSDAGMMDetector) -> None:
    rng = np.random.default_rng(2)
    scores = fitted.score(_normal(rng, 5) + _normal(rng, 2, length=60))
    assert scores.shape == (7,) and scores.dtype == np.float64 and np.isfinite(scores).all()
    s = fitted.training_summary
    assert (s["n_windows"], s["n_train_windows"], s["n_validation_windows"]) == (40, 32, 8)
    assert s["epochs_run"] == 8 and 1 <= s["best_epoch"] <= 8 and s["seed"] == 0
    assert len(fitted.history) == 8 and fitted.history[0]["epoch"] == 1
    assert "val_loss" in fitted.history[-1] and all(np.isfinite(h["loss"]) for h in fitted.history)
    assert fitted.reference_scores is not None and fitted.reference_scores.shape == (8,)
    assert fitted.threshold.value > 0 or fitted.threshold.value <= 0  # a threshold was set
    assert (fitted.n_features, fitted.window_length) == (1, 48)
    assert fitted.model is not None and fitted.model.mixture.means.dtype == torch.float64
    assert len(fitted.score_detailed(_normal(rng, 2))) == 2


def test_multivariate_variable_length_windows() -> None:
    rng = np.random.default_rng(4)
    train = [w[: rng.integers(30, 48)] for w in _normal(rng, 24, f=3)]
    det = TSDAGMMDetector(dataclasses.replace(SMALL, epochs=3)).fit(train, seed=1)
    assert det.n_features == 3 and det.window_length is None
    scores = det.score(_normal(rng, 4, f=3))
    assert scores.shape == (4,) and np.isfinite(scores).all()
    rec = det.reconstruct(train[:2])
    assert [r.shape for r in rec] == [train[0].shape, train[1].shape]
    with pytest.raises(DataError, match="trained on 3"):
        det.score(_normal(rng, 2, f=2))


def test_finite_energy_on_constant_and_degenerate_windows(fitted: TSDAGMMDetector) -> None:
    const = [np.zeros(48), np.full(48, 5.0), np.full(2, -1.0)]
    assert np.isfinite(fitted.score(const)).all()
    # trained on identical constant windows: zero feature variance, the floor keeps it finite
    det = TSDAGMMDetector(dataclasses.replace(SMALL, epochs=2)).fit([np.ones(20)] * 8, seed=0)
    scores = det.score([np.ones(20), np.zeros(20), np.arange(20.0)])
    assert np.isfinite(scores).all() and np.isfinite(det.history[-1]["loss"])


def test_planted_anomalies_rank_above_normal_windows() -> None:
    rng = np.random.default_rng(0)
    train, test = _normal(rng, 40), _normal(rng, 20)
    for k in range(3):
        w = _normal(rng, 1)[0]
        w[8 + 8 * k : 24 + 8 * k] += 4.0  # a plateau no normal window has
        test.append(w)
    det = TSDAGMMDetector(dataclasses.replace(SMALL, epochs=20)).fit(train, seed=0)
    scores = det.score(test)
    assert scores[20:].min() > scores[:20].max()


def test_synthetic_anomalous_cycles_score_higher() -> None:
    series = generate(
        SyntheticConfig(
            n_series=1,
            n_cycles=50,
            period=32,
            seed=2,
            anomaly_rate=0.15,
            kinds=("spike", "pattern"),
        )
    )[0]
    bounds = [*series.cycle_starts.tolist(), len(series.values)]
    cycles = [series.values[a:b] for a, b in itertools.pairwise(bounds)]
    labels = series.cycle_labels
    train = [c for c, y in zip(cycles, labels, strict=True) if y == 0][:30]
    det = TSDAGMMDetector(dataclasses.replace(SMALL, epochs=20)).fit(train, seed=0)
    scores = det.score(cycles)
    assert labels.sum() >= 2
    assert np.median(scores[labels == 1]) > np.quantile(scores[labels == 0], 0.9)


def test_same_seed_same_scores_and_global_rng_untouched() -> None:
    rng = np.random.default_rng(8)
    train, test = _normal(rng, 20), _normal(rng, 5)
    cfg = dataclasses.replace(SMALL, epochs=3)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = TSDAGMMDetector(cfg).fit(train, seed=3).score(test)
    assert torch.rand(1) == expected_next
    b = TSDAGMMDetector(cfg).fit(train, seed=3).score(test)
    c = TSDAGMMDetector(cfg).fit(train, seed=4).score(test)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_early_stopping_and_on_epoch() -> None:
    rng = np.random.default_rng(9)
    seen: list[int] = []
    cfg = dataclasses.replace(SMALL, epochs=30, warmup_fraction=0.1, patience=1)
    det = TSDAGMMDetector(cfg).fit(_normal(rng, 20), seed=0, on_epoch=lambda e, m: seen.append(e))
    s = det.training_summary
    assert seen == list(range(1, s["epochs_run"] + 1))
    assert s["stopped_early"] == (s["epochs_run"] < 30)
    assert s["best_epoch"] <= s["epochs_run"]


def test_bad_input_and_not_fitted(fitted: TSDAGMMDetector) -> None:
    with pytest.raises(NotFittedError, match="fit"):
        TSDAGMMDetector(SMALL).score([np.zeros(10)])
    with pytest.raises(DataError, match="no windows"):
        TSDAGMMDetector(SMALL).fit([])
    with pytest.raises(DataError, match="at least 2 training windows"):
        TSDAGMMDetector(SMALL).fit([np.zeros(10)])
    with pytest.raises(DataError, match="NaN"):
        fitted.score([np.full(10, np.nan)])
    with pytest.raises(DataError, match="at least 2 samples"):
        fitted.score([np.zeros(1)])
    with pytest.raises(DataError, match="same number of features"):
        TSDAGMMDetector(SMALL).fit([np.zeros((10, 1)), np.zeros((10, 2))])
    with pytest.raises(DataError, match="trained on 1"):
        fitted.score([np.zeros((10, 2))])
    with pytest.raises(DataError, match="not one window"):
        fitted.score(np.zeros(10))  # type: ignore[arg-type]


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_is_bit_identical(fitted: TSDAGMMDetector, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    test = [*_normal(rng, 6), np.zeros(48)]
    fitted.hop = 12
    save_checkpoint(fitted, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(loaded, TSDAGMMDetector) and loaded.kind == "dagmm"
    np.testing.assert_array_equal(loaded.score(test), fitted.score(test))
    assert loaded.config == fitted.config
    assert loaded.threshold == fitted.threshold
    assert loaded.quantiles == fitted.quantiles
    assert fitted.reference_scores is not None and loaded.reference_scores is not None
    np.testing.assert_array_equal(loaded.reference_scores, fitted.reference_scores)
    assert loaded.percentile(0.3) == fitted.percentile(0.3)
    assert (loaded.window_length, loaded.hop, loaded.n_features, loaded.seed) == (48, 12, 1, 0)
    assert loaded.history == fitted.history
    assert loaded.infer_threshold(fpr=0.05) == fitted.infer_threshold(fpr=0.05)
    meta, weights = checkpoint_to_bytes(fitted)
    again = checkpoint_from_bytes(meta, weights)
    np.testing.assert_array_equal(again.score(test), fitted.score(test))
    assert meta["normalisation"]["std"][0] > 0


def test_checkpoint_with_bad_config_is_refused(fitted: TSDAGMMDetector) -> None:
    meta, weights = checkpoint_to_bytes(fitted)
    meta["config"]["latent_dim"] = 5  # the weights no longer fit
    with pytest.raises(CheckpointError, match="do not fit"):
        checkpoint_from_bytes(meta, weights)
    meta["config"]["bogus"] = 1
    with pytest.raises(CheckpointError, match="unknown TS-DAGMM config keys"):
        checkpoint_from_bytes(meta, weights)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_scores_match_cpu(fitted: TSDAGMMDetector) -> None:
    rng = np.random.default_rng(12)
    test = _normal(rng, 4)
    cpu = fitted.score(test)
    gpu = TSDAGMMDetector(SMALL, device="cuda").fit(_normal(np.random.default_rng(0), 40), seed=0)
    assert np.isfinite(gpu.score(test)).all()
    np.testing.assert_allclose(fitted.to("cuda").score(test), cpu, rtol=1e-4)
    fitted.to("cpu")
