"""Gaussian mixture numerics: log-densities against scipy, EM, floor, groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from model.errors import DataError, NotFittedError
from model.gmm import (
    GaussianMixture,
    fit_em,
    floored_covariance,
    ledoit_wolf,
    log_gaussian_diag,
    log_gaussian_full,
)

f64 = torch.float64


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def _mixture(
    rng: np.random.Generator, k: int, d: int, covariance: str
) -> tuple[GaussianMixture, np.ndarray, np.ndarray, np.ndarray]:
    weights = rng.dirichlet(np.ones(k))
    means = rng.normal(scale=2.0, size=(k, d))
    if covariance == "diag":
        cov = rng.uniform(0.2, 3.0, size=(k, d))
        covs = np.stack([np.diag(c) for c in cov])
    else:
        covs = np.stack([_random_spd(rng, d) for _ in range(k)])
        cov = covs
    gmm = GaussianMixture(k, d, covariance)
    gmm.set_parameters(
        torch.tensor(np.log(weights)),
        torch.tensor(means),
        torch.tensor(cov),
        torch.full((d,), 1e-9, dtype=f64),
    )
    return gmm, weights, means, covs


def test_log_gaussian_diag_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(50, 6))
    means = rng.normal(size=(3, 6))
    var = rng.uniform(0.1, 4.0, size=(3, 6))
    got = log_gaussian_diag(torch.tensor(z), torch.tensor(means), torch.tensor(var)).numpy()
    want = np.stack([multivariate_normal(means[k], np.diag(var[k])).logpdf(z) for k in range(3)], 1)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_log_gaussian_full_matches_scipy() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(size=(40, 5))
    means = rng.normal(size=(2, 5))
    covs = np.stack([_random_spd(rng, 5) for _ in range(2)])
    chol = torch.linalg.cholesky(torch.tensor(covs))
    got = log_gaussian_full(torch.tensor(z), torch.tensor(means), chol).numpy()
    want = np.stack([multivariate_normal(means[k], covs[k]).logpdf(z) for k in range(2)], 1)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_energy_matches_scipy_mixture(covariance: str) -> None:
    rng = np.random.default_rng(3)
    gmm, w, means, covs = _mixture(rng, 3, 4, covariance)
    z = rng.normal(scale=3.0, size=(100, 4))
    got = gmm.energy(torch.tensor(z)).numpy()
    comp = np.stack([multivariate_normal(means[k], covs[k]).logpdf(z) for k in range(3)], 1)
    want = -logsumexp(comp + np.log(w)[None, :], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    # per-sample memberships replace the weights
    gamma = rng.dirichlet(np.ones(3), size=100)
    got_g = gmm.energy(torch.tensor(z), torch.tensor(np.log(gamma))).numpy()
    np.testing.assert_allclose(
        got_g, -logsumexp(comp + np.log(gamma), axis=1), rtol=1e-9, atol=1e-9
    )


def test_energy_is_finite_far_from_the_data_and_eps_caps_it() -> None:
    rng = np.random.default_rng(4)
    gmm, *_ = _mixture(rng, 2, 17, "diag")
    far = torch.full((3, 17), 1e4, dtype=f64)
    e = gmm.energy(far)
    assert torch.isfinite(e).all() and (e > 1e6).all()  # exp-then-log would give inf
    capped = gmm.energy(far, eps=1e-12)
    np.testing.assert_allclose(capped.numpy(), -math.log(1e-12), rtol=1e-12)


def test_energy_gradient_flows_to_z() -> None:
    rng = np.random.default_rng(5)
    gmm, *_ = _mixture(rng, 2, 3, "full")
    z = torch.tensor(rng.normal(size=(8, 3)), dtype=torch.float32, requires_grad=True)
    gmm.energy(z).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def _blobs(rng: np.random.Generator, n: int = 300) -> np.ndarray:
    centres = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [0.0, 6.0, 6.0]])
    lab = rng.integers(0, 3, size=n)
    return centres[lab] + rng.normal(scale=[0.5, 1.0, 0.3], size=(n, 3))


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_em_increases_likelihood_and_finds_the_clusters(covariance: str) -> None:
    z = torch.tensor(_blobs(np.random.default_rng(6)))
    gmm = GaussianMixture(3, 3, covariance)
    # start from a poor mixture (all components near one point) so EM has work to do
    start = torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.1]], dtype=f64)
    cov0 = (
        torch.ones(3, 3, dtype=f64)
        if covariance == "diag"
        else torch.eye(3, dtype=f64).repeat(3, 1, 1)
    )
    gmm.set_parameters(torch.zeros(3, dtype=f64), start, cov0, torch.full((3,), 1e-6, dtype=f64))
    res = fit_em(gmm, z, max_iter=500, tol=1e-10, warm_start=True)
    ll = np.array(res.log_likelihood)
    assert len(ll) > 5
    assert np.all(np.diff(ll) >= -1e-9), ll  # EM never decreases the likelihood
    assert ll[-1] > ll[0] + 0.5
    fit_em(gmm, z, max_iter=200, tol=1e-10, seed=0)  # k-means++ start
    found = np.sort(gmm.means.numpy()[:, 1])
    np.testing.assert_allclose(found, [0.0, 5.0, 6.0], atol=0.4)
    # the fit is seeded
    other = GaussianMixture(3, 3, covariance)
    fit_em(other, z, max_iter=200, tol=1e-10, seed=0)
    assert torch.equal(other.means, gmm.means)


def test_em_with_floor_is_still_monotone_and_respects_the_floor() -> None:
    z = torch.tensor(_blobs(np.random.default_rng(7), 120))
    for covariance in ("diag", "full"):
        gmm = GaussianMixture(3, 3, covariance)
        res = fit_em(gmm, z, max_iter=100, tol=1e-12, floor_rel=0.2, seed=1)
        assert np.all(np.diff(res.log_likelihood) >= -1e-9)
        floor = gmm.floor.numpy()  # (K, D)
        for k, cov in enumerate(gmm.covariances().numpy()):
            s = np.sqrt(floor[k])
            white = cov / np.outer(s, s)
            assert np.linalg.eigvalsh(white).min() >= 1.0 - 1e-8


def test_degenerate_data_gives_finite_energies() -> None:
    # identical points and a constant feature: the floor keeps everything invertible
    z = torch.zeros(20, 4, dtype=f64)
    z[:, 0] = 1.0
    for covariance in ("diag", "full"):
        gmm = GaussianMixture(2, 4, covariance)
        fit_em(gmm, z, floor_abs=1e-6, seed=0)
        e = gmm.energy(torch.cat([z, z + 0.5]))
        assert torch.isfinite(e).all()


def test_floored_covariance_leaves_large_covariances_alone() -> None:
    rng = np.random.default_rng(8)
    cov = torch.tensor(np.stack([_random_spd(rng, 4) + 5 * np.eye(4)]))
    out = floored_covariance(cov, torch.full((4,), 0.01, dtype=f64))
    np.testing.assert_allclose(out.numpy(), cov.numpy(), atol=1e-10)


def test_ledoit_wolf_matches_scikit_learn() -> None:
    covariance = pytest.importorskip("sklearn.covariance")
    rng = np.random.default_rng(9)
    x = rng.normal(size=(12, 20)) @ rng.normal(size=(20, 20))
    xc = x - x.mean(0)
    lw = covariance.LedoitWolf(assume_centered=True).fit(xc)
    ours = ledoit_wolf(
        torch.tensor(xc)[None],
        torch.ones(12, 1, dtype=f64),
        torch.tensor([12.0], dtype=f64),
        torch.ones(20, dtype=f64),
    )[0]
    np.testing.assert_allclose(ours.numpy(), lw.covariance_, rtol=1e-9, atol=1e-9)


def test_groups_score_each_sample_with_its_own_mixture() -> None:
    rng = np.random.default_rng(10)
    a = rng.normal(size=(80, 2))
    b = rng.normal(loc=10.0, scale=2.0, size=(80, 2))
    z = torch.tensor(np.concatenate([a, b]))
    groups = torch.tensor([0] * 80 + [1] * 80)
    grouped = GaussianMixture(1, 2, "full", n_groups=2)
    fit_em(grouped, z, groups=groups, seed=0)
    single_b = GaussianMixture(1, 2, "full")
    fit_em(single_b, z[80:], seed=0)
    np.testing.assert_allclose(
        grouped.energy(z[80:], groups=groups[80:]).numpy(),
        single_b.energy(z[80:]).numpy(),
        rtol=1e-10,
    )
    with pytest.raises(DataError):
        grouped.energy(z)  # groups are required


def test_unfitted_mixture_raises() -> None:
    with pytest.raises(NotFittedError):
        GaussianMixture(1, 3).energy(torch.zeros(2, 3))
    with pytest.raises(DataError):
        GaussianMixture(1, 3, "spherical")
