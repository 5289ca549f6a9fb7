"""The Seq2GMM core through its public API: GMM numerics, detector behaviour, checkpoints."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from model.checkpoint import (
    checkpoint_from_bytes,
    checkpoint_to_bytes,
    load_checkpoint,
    save_checkpoint,
)
from model.detectors.seq2gmm.config import default_config, load_config
from model.detectors.seq2gmm.detector import Seq2GMMDetector
from model.errors import CheckpointError, DataError, NotFittedError, ThresholdNotSetError
from model.evaluation.synthetic import SyntheticConfig, generate
from model.gmm import GaussianMixture, fit_em


def mixture_reference(
    z: np.ndarray, w: np.ndarray, means: np.ndarray, covs: np.ndarray
) -> np.ndarray:
    """-log sum_k w_k N(z; mu_k, Sigma_k) with scipy, in log space."""
    logs = np.stack(
        [np.log(w[k]) + multivariate_normal(means[k], covs[k]).logpdf(z) for k in range(len(w))],
        axis=1,
    )
    m = logs.max(axis=1, keepdims=True)
    return -(m[:, 0] + np.log(np.exp(logs - m).sum(axis=1)))


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_energy_equals_the_scipy_log_density(covariance: str) -> None:
    rng = np.random.default_rng(0)
    k, d, n = 3, 4, 50
    w = rng.dirichlet(np.ones(k))
    means = rng.normal(size=(k, d))
    if covariance == "diag":
        var = rng.uniform(0.2, 2.0, size=(k, d))
        covs = np.stack([np.diag(v) for v in var])
        cov_param = torch.tensor(var)
    else:
        a = rng.normal(size=(k, d, d))
        covs = a @ a.transpose(0, 2, 1) + 0.5 * np.eye(d)
        cov_param = torch.tensor(covs)
    z = rng.normal(scale=2.0, size=(n, d)) * 3  # includes points far in the tails
    gmm = GaussianMixture(k, d, covariance)
    gmm.set_parameters(
        torch.tensor(np.log(w)),
        torch.tensor(means),
        cov_param,
        torch.zeros(k, d, dtype=torch.float64),
    )
    energy = gmm.energy(torch.tensor(z)).numpy()
    np.testing.assert_allclose(energy, mixture_reference(z, w, means, covs), rtol=1e-9, atol=1e-9)
    assert np.all(np.isfinite(energy))


def test_energies_stay_finite_far_from_every_component() -> None:
    gmm = GaussianMixture(1, 2, "diag")
    gmm.set_parameters(
        torch.zeros(1),
        torch.zeros(1, 2, dtype=torch.float64),
        torch.full((1, 2), 1e-6, dtype=torch.float64),
        torch.zeros(1, 2, dtype=torch.float64),
    )
    e = gmm.energy(torch.tensor([[1e3, -1e3]], dtype=torch.float64))
    assert torch.isfinite(e).all() and e.item() > 1e11  # exp-then-log would give inf


def test_em_increases_the_likelihood() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(200, 3, generator=gen) - 3, torch.randn(200, 3, generator=gen) + 3])
    gmm = GaussianMixture(2, 3, "full")
    result = fit_em(gmm, z.double(), max_iter=50, seed=0)
    ll = result.log_likelihood
    assert len(ll) >= 2 and all(b >= a - 1e-9 for a, b in itertools.pairwise(ll))
    assert gmm.log_likelihood(z.double()).item() == pytest.approx(ll[-1], abs=1e-6)


def test_configs_load_and_reject_unknown_names(tmp_path: Path) -> None:
    assert load_config("faithful").network.hidden_size == 15
    assert load_config("faithful").network.n_components == 1
    path = tmp_path / "c.json"
    default_config().to_json(path)
    assert load_config(path) == default_config()
    with pytest.raises(DataError, match="unknown config"):
        load_config("nope")


# --------------------------------------------------------------------------- the detector


def small_config() -> object:
    cfg = default_config()
    return cfg.replace(train=dataclasses.replace(cfg.train, epochs=15, patience=None))


@pytest.fixture(scope="module")
def data() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Normal synthetic cycles for training, held-out normal ones, and planted anomalies."""
    series = generate(SyntheticConfig(n_series=2, n_cycles=70, period=48, anomaly_rate=0.0, seed=1))
    cycles = []  # one window per cycle: quasi-periodic, so their lengths differ
    for s in series:
        bounds = [*s.cycle_starts.tolist(), len(s.values)]
        cycles += [s.values[a:b, 0] for a, b in itertools.pairwise(bounds)]
    train, normal = cycles[:120], cycles[120:140]
    spike = normal[0].copy()
    spike[20:24] += 6.0
    inverted = -normal[1]  # the cycle upside down: every segment's shape is wrong
    return train, normal, [spike, inverted]


@pytest.fixture(scope="module")
def fitted(data: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]) -> Seq2GMMDetector:
    torch.manual_seed(0)
    return Seq2GMMDetector(small_config()).fit(data[0], seed=0)  # type: ignore[arg-type]


def test_unfitted_detector_raises_typed_errors(data: tuple) -> None:  # type: ignore[type-arg]
    det = Seq2GMMDetector(small_config())  # type: ignore[arg-type]
    with pytest.raises(NotFittedError):
        det.score(data[1])
    with pytest.raises(ThresholdNotSetError):
        _ = det.threshold


def test_output_shapes_and_localisation(fitted: Seq2GMMDetector, data: tuple) -> None:  # type: ignore[type-arg]
    normal = data[1]
    scores = fitted.score(normal)
    assert scores.shape == (len(normal),) and scores.dtype == np.float64
    detailed = fitted.score_detailed(normal[:3])
    k = fitted.config.segmentation.n_segments
    for r, s, w in zip(detailed, scores[:3], normal[:3], strict=True):
        assert len(r.segment_energies) == len(r.intervals) == k
        assert r.intervals[0][0] == 0 and r.intervals[-1][1] == len(w) - 1
        assert all(a[1] == b[0] for a, b in zip(r.intervals, r.intervals[1:], strict=False))
        assert r.score == pytest.approx(s)
        assert 0.0 <= (r.percentile or 0.0) <= 100.0


def test_planted_anomalies_rank_above_normal_windows(fitted: Seq2GMMDetector, data: tuple) -> None:  # type: ignore[type-arg]
    _, normal, anomalies = data
    assert fitted.score(anomalies).min() > fitted.score(normal).max()
    spike = fitted.score_detailed([anomalies[0]])[0]
    start, end = spike.top_interval  # the worst segment contains the spike
    assert start <= 23 and end >= 20


def test_degenerate_windows_give_finite_energies(fitted: Seq2GMMDetector) -> None:
    windows = [
        np.zeros(48),
        np.full(48, 5.0),
        np.arange(4, dtype=float),
        np.r_[np.zeros(24), np.ones(24)],
    ]
    assert np.all(np.isfinite(fitted.score(windows)))
    with pytest.raises(DataError):
        fitted.score([np.array([1.0, np.nan, 2.0, 3.0])])


def test_padding_does_not_leak_into_scores(fitted: Seq2GMMDetector, data: tuple) -> None:  # type: ignore[type-arg]
    _, normal, _ = data
    alone = fitted.score([normal[0]])
    long = np.tile(normal[1], 3)  # longer segments in the same batch: more padding for normal[0]
    together = fitted.score([normal[0], long])
    np.testing.assert_allclose(together[0], alone[0], rtol=1e-5, atol=1e-6)


def test_same_seed_same_scores(data: tuple, fitted: Seq2GMMDetector) -> None:  # type: ignore[type-arg]
    torch.manual_seed(123)  # the global RNG must not matter: fit is seeded by its argument
    again = Seq2GMMDetector(small_config()).fit(data[0], seed=0)  # type: ignore[arg-type]
    np.testing.assert_array_equal(again.score(data[1]), fitted.score(data[1]))


def test_threshold_and_percentile(fitted: Seq2GMMDetector, data: tuple) -> None:  # type: ignore[type-arg]
    anomalies = data[2]
    thr = fitted.infer_threshold(fpr=0.05)
    assert math.isfinite(thr.value) and fitted.threshold == thr
    flags = fitted.predict(anomalies)
    assert flags.all()
    assert fitted.percentile(fitted.score(anomalies)).min() >= 99.0


def test_checkpoint_round_trip_is_bit_identical(
    fitted: Seq2GMMDetector,
    data: tuple,
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    if not fitted.has_threshold:
        fitted.infer_threshold(fpr=0.05)
    out = save_checkpoint(fitted, tmp_path / "m")
    loaded = load_checkpoint(out)
    np.testing.assert_array_equal(loaded.score(data[1]), fitted.score(data[1]))
    assert loaded.threshold == fitted.threshold
    meta, weights = checkpoint_to_bytes(fitted)
    for key in ("kind", "config", "window_length", "n_features", "threshold", "weights_sha256"):
        assert key in meta
    again = checkpoint_from_bytes(meta, weights)
    np.testing.assert_array_equal(again.score(data[1]), fitted.score(data[1]))


def test_tampered_weights_are_refused(fitted: Seq2GMMDetector) -> None:
    meta, weights = checkpoint_to_bytes(fitted)
    tampered = bytearray(weights)
    tampered[-5] ^= 0xFF
    with pytest.raises(CheckpointError, match="sha256"):
        checkpoint_from_bytes(meta, bytes(tampered))
