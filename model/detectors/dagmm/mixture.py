"""DAGMM's mixture: estimated per batch from the estimation network's memberships, its energy,
and the covariance floor.

Shapes: N windows, D the width of z, K mixture components.
"""

from __future__ import annotations

import math

import torch

from model.gmm import floored_covariance, log_gaussian_full


def batch_mixture(
    z: torch.Tensor, gamma: torch.Tensor, floor: torch.Tensor, *, project: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DAGMM's mixture from memberships: log phi (K,), mu (K, D), floored Sigma (K, D, D).

    z (N, D), gamma (N, K), floor (D,). phi_k = mean_i gamma_ik; mu_k, Sigma_k are the
    gamma-weighted mean and covariance. The floor is added (``project=False``, differentiable)
    or imposed as ``Sigma >= diag(floor)`` by :func:`floored_covariance` (``project=True``).
    """
    nk = gamma.sum(0) + 10.0 * torch.finfo(z.dtype).eps  # (K,)
    log_phi = torch.log(nk) - math.log(z.shape[0])
    mu = (gamma.T @ z) / nk[:, None]  # (K, D)
    diff = z[None, :, :] - mu[:, None, :]  # (K, N, D)
    cov = (gamma.T[:, :, None] * diff).transpose(1, 2) @ diff / nk[:, None, None]  # (K, D, D)
    cov = 0.5 * (cov + cov.transpose(1, 2))
    cov = floored_covariance(cov, floor) if project else cov + torch.diag_embed(floor.expand_as(mu))
    return log_phi, mu, cov


def mixture_energy(
    z: torch.Tensor, log_phi: torch.Tensor, mu: torch.Tensor, chol: torch.Tensor
) -> torch.Tensor:
    """(N,) E(z) = -logsumexp_k(log phi_k + log N(z; mu_k, L_k L_k^T)), z (N, D)."""
    return -torch.logsumexp(log_phi[None, :] + log_gaussian_full(z, mu, chol), dim=1)


def feature_floor(z: torch.Tensor, absolute: float, relative: float) -> torch.Tensor:
    """(D,) variance floor absolute + relative * var(z_d) (population variance, no gradient)."""
    z = z.detach()
    var = z.var(0, unbiased=False) if z.shape[0] > 1 else torch.zeros_like(z[0])
    return absolute + relative * var
