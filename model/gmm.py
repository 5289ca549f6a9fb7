"""Gaussian mixtures in log space: log-densities, energies and a seeded EM fit, all in torch.

Everything here works on feature vectors ``z`` of shape (N, D) and K components:

- :func:`log_gaussian_diag` / :func:`log_gaussian_full` give the (N, K) component log-densities,
  the full-covariance one through a Cholesky factor and triangular solves (no inverse, no
  determinant of the covariance itself);
- :meth:`GaussianMixture.energy` is ``E(z) = -logsumexp_k(log w_k + log N(z; mu_k, Sigma_k))``,
  with the mixture weights ``w`` either the fitted ones or per-sample memberships ``gamma`` from
  an estimation network, never exp-then-log;
- :func:`fit_em` fits the mixture by expectation-maximisation with k-means++ initialisation
  drawn from a seeded generator, or warm-started from the current parameters.

Covariance floor: every covariance is constrained to ``Sigma_k >= diag(floor_k)`` (Loewner order).
For diagonal covariances this is a clamp of the variances; for full covariances the M-step
whitens by the floor, clamps the eigenvalues at 1 and maps back. Both are the exact maximisers
of the M-step under the constraint, so EM never decreases the likelihood and no component can
collapse onto a point (the classic GMM singularity).

Parameters are kept in float64 buffers (so they live in ``state_dict`` and checkpoints); inputs
are promoted to float64, so gradients still flow to ``z`` when the mixture is frozen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from model.errors import DataError, NotFittedError

LOG_2PI = math.log(2.0 * math.pi)
COVARIANCE_TYPES = ("diag", "full")


def log_gaussian_diag(
    z: torch.Tensor, means: torch.Tensor, variances: torch.Tensor
) -> torch.Tensor:
    """Log-densities of diagonal Gaussians. z (N, D), means (K, D), variances (K, D) -> (N, K)."""
    d = z.shape[-1]
    diff = z[:, None, :] - means[None, :, :]  # (N, K, D)
    maha = (diff * diff / variances[None, :, :]).sum(-1)  # (N, K)
    logdet = torch.log(variances).sum(-1)  # (K,)
    return -0.5 * (d * LOG_2PI + logdet[None, :] + maha)


def log_gaussian_full(z: torch.Tensor, means: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """Log-densities of full Gaussians via Cholesky factors.

    z (N, D), means (K, D), chol (K, D, D) lower-triangular with Sigma_k = L_k L_k^T -> (N, K).
    """
    d = z.shape[-1]
    diff = z[None, :, :] - means[:, None, :]  # (K, N, D)
    sol = torch.linalg.solve_triangular(chol, diff.transpose(1, 2), upper=False)  # (K, D, N)
    maha = (sol * sol).sum(1).T  # (N, K)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
    return -0.5 * (d * LOG_2PI + logdet[None, :] + maha)


def floored_covariance(cov: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """Closest (in likelihood) covariance with ``cov >= diag(floor)``.

    cov (K, D, D), floor (K, D) or (D,) -> (K, D, D).
    """
    s = floor.sqrt().expand(cov.shape[0], cov.shape[1])  # (K, D)
    white = cov / (s[:, :, None] * s[:, None, :])  # F^-1/2 cov F^-1/2
    white = 0.5 * (white + white.transpose(1, 2))
    evals, evecs = torch.linalg.eigh(white)  # (K, D), (K, D, D)
    evals = evals.clamp_min(1.0)
    white = (evecs * evals[:, None, :]) @ evecs.transpose(1, 2)
    out = white * (s[:, :, None] * s[:, None, :])
    return 0.5 * (out + out.transpose(1, 2))


def safe_cholesky(cov: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of (K, D, D) covariances; adds growing jitter if roundoff broke PD-ness."""
    chol, info = torch.linalg.cholesky_ex(cov)
    if not bool((info != 0).any()):
        return chol
    scale = torch.diagonal(cov, dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)  # (K,)
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    for power in range(-12, 0):
        jitter = (10.0**power) * scale[:, None, None] * eye
        chol, info = torch.linalg.cholesky_ex(cov + jitter)
        if not bool((info != 0).any()):
            return chol
    raise DataError(
        "a covariance matrix is not positive definite even with jitter; raise the floor"
    )


class GaussianMixture(nn.Module):
    """Gaussian mixtures over D-dimensional features (parameters as buffers).

    ``n_groups`` independent mixtures of ``n_components`` each can share one module: component
    ``k`` (of ``K = n_groups * n_components``) belongs to group ``k // n_components`` and a
    sample tagged with group ``g`` is scored by that group's mixture only (Seq2GMM uses one
    group per segment position). ``n_groups = 1`` is an ordinary mixture.
    """

    log_weights: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor
    chol: torch.Tensor
    floor: torch.Tensor
    fitted: torch.Tensor
    component_group: torch.Tensor

    def __init__(
        self, n_components: int, dim: int, covariance: str = "diag", n_groups: int = 1
    ) -> None:
        super().__init__()
        if covariance not in COVARIANCE_TYPES:
            raise DataError(f"covariance must be one of {COVARIANCE_TYPES}, got {covariance!r}")
        if n_components < 1 or dim < 1 or n_groups < 1:
            raise DataError(
                f"need n_components, dim, n_groups >= 1, got {n_components}, {dim}, {n_groups}"
            )
        self.n_components = n_components  # per group
        self.n_groups = n_groups
        self.dim = dim
        self.covariance = covariance
        k = n_components * n_groups
        self.n_total = k
        f64 = torch.float64
        self.register_buffer("log_weights", torch.full((k,), -math.log(n_components), dtype=f64))
        self.register_buffer("means", torch.zeros(k, dim, dtype=f64))
        # diag: variances (K, D); full: chol (K, D, D). Both kept so the state dict has fixed keys.
        self.register_buffer("variances", torch.ones(k, dim, dtype=f64))
        self.register_buffer("chol", torch.eye(dim, dtype=f64).expand(k, dim, dim).clone())
        self.register_buffer("floor", torch.zeros(k, dim, dtype=f64))  # per component
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        groups = torch.arange(k) // n_components
        self.register_buffer("component_group", groups, persistent=False)

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted.item())

    def covariances(self) -> torch.Tensor:
        """(K, D, D) covariance matrices (diagonal ones expanded)."""
        if self.covariance == "diag":
            return torch.diag_embed(self.variances)
        return self.chol @ self.chol.transpose(1, 2)

    def normalise_weights(self, log_weights: torch.Tensor) -> torch.Tensor:
        """Log-weights (K,) renormalised to sum to one within each group."""
        lw = log_weights.view(self.n_groups, self.n_components)
        return (lw - torch.logsumexp(lw, dim=1, keepdim=True)).reshape(-1)

    def set_parameters(
        self, log_weights: torch.Tensor, means: torch.Tensor, cov: torch.Tensor, floor: torch.Tensor
    ) -> None:
        """Install parameters. ``cov`` is (K, D) variances for diag, (K, D, D) matrices for full."""
        with torch.no_grad():
            self.log_weights.copy_(self.normalise_weights(log_weights))
            self.means.copy_(means)
            self.floor.copy_(floor)
            if self.covariance == "diag":
                self.variances.copy_(torch.maximum(cov, floor.expand_as(cov)))
            else:
                self.chol.copy_(safe_cholesky(cov))
            self.fitted.fill_(True)

    def component_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """(N, K) log N(z_n; mu_k, Sigma_k)."""
        if not self.is_fitted:
            raise NotFittedError(
                "the Gaussian mixture has no parameters yet: fit it (fit_em) first"
            )
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise DataError(f"expected features of shape (N, {self.dim}), got {tuple(z.shape)}")
        z = z.to(self.means.dtype)
        if self.covariance == "diag":
            return log_gaussian_diag(z, self.means, self.variances)
        return log_gaussian_full(z, self.means, self.chol)

    def group_mask(self, groups: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """(N, K) bool, True where component k belongs to sample n's group (None: one group)."""
        if self.n_groups == 1:
            return None
        if groups is None:
            raise DataError(f"this mixture has {self.n_groups} groups: pass each sample's group")
        if groups.shape != (n,):
            raise DataError(f"groups must have shape ({n},), got {tuple(groups.shape)}")
        if int(groups.min()) < 0 or int(groups.max()) >= self.n_groups:
            raise DataError(f"group ids must be in [0, {self.n_groups}), got {int(groups.max())}")
        return self.component_group.to(groups.device)[None, :] == groups[:, None]

    def log_joint(
        self,
        z: torch.Tensor,
        log_gamma: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(N, K) log w_k + log N(z; k), -inf outside each sample's group.

        ``log_gamma`` (N, K), per-sample memberships (already normalised within the group),
        replaces the fitted weights.
        """
        lw = self.log_weights[None, :] if log_gamma is None else log_gamma.to(self.means.dtype)
        lj = lw + self.component_log_prob(z)
        mask = self.group_mask(groups, z.shape[0])
        if mask is not None:
            lj = lj.masked_fill(~mask, -math.inf)
        return lj

    def energy(
        self,
        z: torch.Tensor,
        log_gamma: torch.Tensor | None = None,
        eps: float = 0.0,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(N,) energies -log(sum_k w_k N(z; k) + eps) computed with logsumexp.

        ``eps > 0`` reproduces the reference's ``+ 1e-12`` inside the log (it caps energies at
        ``-log(eps)``); it is added in log space too, as one more logsumexp term.
        """
        lj = self.log_joint(z, log_gamma, groups)  # (N, K)
        if eps > 0.0:
            pad = torch.full_like(lj[:, :1], math.log(eps))
            lj = torch.cat([lj, pad], dim=1)
        return -torch.logsumexp(lj, dim=1)

    def log_likelihood(self, z: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Mean log-likelihood of z under the mixture (its own weights)."""
        return -self.energy(z, groups=groups).mean()


@dataclass
class EMResult:
    """Outcome of one EM fit: mean log-likelihood after each iteration."""

    log_likelihood: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False


def _kmeans_pp_init(z: torch.Tensor, k: int, gen: torch.Generator, n_lloyd: int) -> torch.Tensor:
    """k-means++ seeding then a few Lloyd iterations; returns (N,) hard labels."""
    n = z.shape[0]
    idx = int(torch.randint(n, (1,), generator=gen, device="cpu").item())
    centers = [z[idx]]
    d2 = ((z - centers[0]) ** 2).sum(-1)
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0.0:  # all points identical to the centres: any choice will do
            idx = int(torch.randint(n, (1,), generator=gen, device="cpu").item())
        else:
            probs = (d2 / total).cpu()
            idx = int(torch.multinomial(probs, 1, generator=gen).item())
        centers.append(z[idx])
        d2 = torch.minimum(d2, ((z - z[idx]) ** 2).sum(-1))
    c = torch.stack(centers)  # (k, D)
    labels = torch.cdist(z, c).argmin(1)
    for _ in range(n_lloyd):
        onehot = torch.nn.functional.one_hot(labels, k).to(z.dtype)  # (N, k)
        counts = onehot.sum(0)
        new_c = (onehot.T @ z) / counts.clamp_min(1.0)[:, None]
        c = torch.where(counts[:, None] > 0, new_c, c)
        new_labels = torch.cdist(z, c).argmin(1)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return labels


def ledoit_wolf(
    diff: torch.Tensor, resp: torch.Tensor, nk: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Ledoit-Wolf shrunk covariances from weighted, centred samples.

    diff (K, N, D) = z - mu_k, resp (N, K), nk (K,), scale (D,) per-feature scale (the shrinkage
    runs on standardised features towards a multiple of the identity) -> (K, D, D).
    The shrinkage intensity is estimated from the data (Ledoit & Wolf 2004, with sample
    weights): strong when few samples support many dimensions, negligible with plenty.
    """
    d = diff.shape[-1]
    x = diff / scale  # (K, N, D)
    r = resp.T  # (K, N)
    s = (r[:, :, None] * x).transpose(1, 2) @ x / nk[:, None, None]  # (K, D, D)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    mu = torch.diagonal(s, dim1=-2, dim2=-1).sum(-1) / d  # (K,)
    delta2 = ((s - mu[:, None, None] * eye) ** 2).sum((1, 2))  # (K,)
    sq = (x * x).sum(-1)  # (K, N) |x_i|^2
    xsx = ((x @ s) * x).sum(-1)  # (K, N) x_i^T S x_i
    s_fro = (s * s).sum((1, 2))  # (K,)
    per = sq * sq - 2.0 * xsx + s_fro[:, None]  # (K, N) |x_i x_i^T - S|_F^2
    beta2 = (r * per).sum(1) / (nk * nk)
    beta2 = torch.minimum(beta2, delta2)
    alpha = torch.where(delta2 > 0, beta2 / delta2.clamp_min(1e-300), torch.ones_like(delta2))
    shrunk = alpha[:, None, None] * mu[:, None, None] * eye + (1.0 - alpha[:, None, None]) * s
    return shrunk * (scale[None, :, None] * scale[None, None, :])


def _m_step(
    gmm: GaussianMixture,
    z: torch.Tensor,
    resp: torch.Tensor,
    floor: torch.Tensor,
    shrink_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted moments. z (N, D), resp (N, K) -> log_weights (K,), means (K, D), cov.

    With ``shrink_scale`` (D,), full covariances are Ledoit-Wolf shrunk before the floor.
    """
    nk = resp.sum(0) + 10.0 * torch.finfo(z.dtype).eps  # (K,)
    means = (resp.T @ z) / nk[:, None]  # (K, D)
    log_weights = gmm.normalise_weights(torch.log(nk))
    if gmm.covariance == "diag":
        diff = z[:, None, :] - means[None, :, :]  # (N, K, D)
        var = (resp[:, :, None] * diff * diff).sum(0) / nk[:, None]  # (K, D)
        var = torch.maximum(var, floor.expand_as(var))
        return log_weights, means, var
    diff = z[None, :, :] - means[:, None, :]  # (K, N, D)
    if shrink_scale is not None:
        cov = ledoit_wolf(diff, resp, nk, shrink_scale)
    else:
        cov = (resp.T[:, :, None] * diff).transpose(1, 2) @ diff / nk[:, None, None]  # (K, D, D)
    return log_weights, means, floored_covariance(cov, floor)


def feature_floor(z: torch.Tensor, absolute: float, relative: float) -> torch.Tensor:
    """(D,) variance floor ``absolute + relative * var(z_d)``."""
    var = z.var(0, unbiased=False) if z.shape[0] > 1 else torch.zeros_like(z[0])
    return absolute + relative * var


def component_floor(
    gmm: GaussianMixture,
    z: torch.Tensor,
    groups: torch.Tensor | None,
    absolute: float,
    relative: float,
) -> torch.Tensor:
    """(K, D) floor of each component: :func:`feature_floor` of its group's samples."""
    rows = []
    for g in range(gmm.n_groups):
        zg = z if groups is None else z[groups == g]
        rows.append(feature_floor(zg, absolute, relative).expand(gmm.n_components, -1))
    return torch.cat(rows, dim=0)


def _initial_responsibilities(
    gmm: GaussianMixture, z: torch.Tensor, groups: torch.Tensor | None, seed: int, n_lloyd: int
) -> torch.Tensor:
    """(N, K) hard responsibilities from k-means++ run separately inside each group."""
    n, m = z.shape[0], gmm.n_components
    resp = torch.zeros(n, gmm.n_total, dtype=z.dtype, device=z.device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for g in range(gmm.n_groups):
        rows = (
            torch.arange(n, device=z.device)
            if groups is None
            else torch.nonzero(groups == g).flatten()
        )
        if rows.numel() == 0:
            raise DataError(f"no sample of group {g}: every group needs training samples")
        if m == 1:
            labels = torch.zeros(rows.numel(), dtype=torch.long, device=z.device)
        else:
            labels = _kmeans_pp_init(z[rows], m, gen, n_lloyd)
        resp[rows, g * m + labels] = 1.0
    return resp


def fit_em(
    gmm: GaussianMixture,
    z: torch.Tensor,
    *,
    groups: torch.Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    floor_abs: float = 1e-6,
    floor_rel: float = 0.0,
    warm_start: bool = False,
    seed: int = 0,
    n_lloyd: int = 10,
    shrinkage: bool = False,
) -> EMResult:
    """Fit ``gmm`` to z (N, D) by EM (no gradient). Returns the log-likelihood history.

    Initialisation: k-means++ (seeded) + Lloyd iterations as hard responsibilities, like
    scikit-learn's default (per group when the mixture has groups); with ``warm_start`` and a
    fitted mixture, starts from its parameters. Stops when the mean log-likelihood improves by
    less than ``tol``. The floor on every covariance is ``floor_abs + floor_rel * var(z_d)``, the
    variance taken over the samples of the component's group.
    ``shrinkage`` (full covariance only) Ledoit-Wolf-shrinks each covariance in the M-step;
    EM is then a penalised fit and the likelihood need not increase monotonically.
    """
    if z.ndim != 2 or z.shape[1] != gmm.dim:
        raise DataError(f"expected features of shape (N, {gmm.dim}), got {tuple(z.shape)}")
    if z.shape[0] < 1:
        raise DataError("cannot fit a Gaussian mixture to zero samples")
    if not bool(torch.isfinite(z).all()):
        raise DataError("features contain NaN or infinity; check the input windows")
    with torch.no_grad():
        z = z.detach().to(device=gmm.means.device, dtype=torch.float64)
        if groups is not None:
            groups = groups.to(z.device)
        floor = component_floor(gmm, z, groups, floor_abs, floor_rel)  # (K, D)
        shrink_scale = None
        if shrinkage and gmm.covariance == "full":
            shrink_scale = torch.sqrt(feature_floor(z, 1e-12, 1.0))  # per-feature std
        if not bool((floor > 0).all()):
            raise DataError("the covariance floor must be positive; set floor_abs > 0")
        if warm_start and gmm.is_fitted:
            gmm.floor.copy_(floor)
            resp = torch.softmax(gmm.log_joint(z, groups=groups), dim=1)
        else:
            resp = _initial_responsibilities(gmm, z, groups, seed, n_lloyd)
        result = EMResult()
        prev = -math.inf
        for it in range(max_iter):
            gmm.set_parameters(*_m_step(gmm, z, resp, floor, shrink_scale), floor)
            lj = gmm.log_joint(z, groups=groups)  # (N, K)
            lse = torch.logsumexp(lj, dim=1, keepdim=True)
            ll = float(lse.mean())
            result.log_likelihood.append(ll)
            result.n_iter = it + 1
            resp = torch.exp(lj - lse)
            if ll - prev < tol:
                result.converged = True
                break
            prev = ll
    return result
