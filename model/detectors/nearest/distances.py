"""Distances between cycles resampled to a common number of points.

Every function takes query cycles ``Q`` (Nq, P, F) and reference cycles ``R`` (Nr, P, F) as
float tensors and returns the (Nq, Nr) distance matrix, computed in chunks so that memory stays
bounded whatever Nq and Nr are:

- :func:`euclidean`: the plain L2 distance of the flattened cycles;
- :func:`dtw`: dynamic time warping inside a Sakoe-Chiba band (squared point costs summed over
  features, the square root of the best path's cost), shift- and stretch-tolerant;
- :func:`sbd`: the shape-based distance of k-Shape (Paparrizos & Gravano, 2015):
  1 - the largest normalised cross-correlation over every shift, on cycles z-normalised one by
  one, so level and scale do not count, only shape.

:func:`resample` brings cycles of any length to P points (linear interpolation per feature).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

PAIRS_PER_CHUNK = 1 << 15  # (query, reference) pairs per DTW / SBD step


def resample(windows: Sequence[np.ndarray], points: int) -> np.ndarray:
    """(N, points, F) float64: each (L, F) window linearly interpolated to ``points`` samples
    spread evenly from its first to its last sample (a window of ``points`` samples is kept)."""
    out = np.empty((len(windows), points, windows[0].shape[1]), dtype=np.float64)
    grid = np.linspace(0.0, 1.0, points)
    for i, w in enumerate(windows):
        if w.shape[0] == points:
            out[i] = w
            continue
        src = np.linspace(0.0, 1.0, w.shape[0])
        for f in range(w.shape[1]):
            out[i, :, f] = np.interp(grid, src, w[:, f])
    return out


def euclidean(Q: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """(Nq, Nr) L2 distances of the flattened cycles."""
    q, r = Q.reshape(Q.shape[0], -1), R.reshape(R.shape[0], -1)
    rows = max(1, PAIRS_PER_CHUNK * 8 // max(1, r.shape[0]))
    parts = [
        torch.cdist(q[a : a + rows], r, compute_mode="donot_use_mm_for_euclid_dist")
        for a in range(0, q.shape[0], rows)
    ]
    return torch.cat(parts)


def _pair_chunks(nq: int, nr: int) -> list[tuple[int, int]]:
    """Query row ranges such that each holds about PAIRS_PER_CHUNK (query, reference) pairs."""
    rows = max(1, PAIRS_PER_CHUNK // max(1, nr))
    return [(a, min(nq, a + rows)) for a in range(0, nq, rows)]


def band_width(points: int, band: float) -> int:
    """The Sakoe-Chiba half-width in samples for a band given as a fraction of the length."""
    return max(1, round(band * points))


def dtw(Q: torch.Tensor, R: torch.Tensor, band: float = 0.1) -> torch.Tensor:
    """(Nq, Nr) DTW distances inside a band of ``band`` x P samples either side of the diagonal."""
    w = band_width(Q.shape[1], band)
    nq, nr = Q.shape[0], R.shape[0]
    qi = torch.arange(nq, device=Q.device).repeat_interleave(nr)
    ri = torch.arange(nr, device=Q.device).repeat(nq)
    return dtw_pairs(Q, R, qi, ri, w).reshape(nq, nr)


def lb_keogh(Q: torch.Tensor, R: torch.Tensor, band: float = 0.1) -> torch.Tensor:
    """(Nq, Nr) LB_Keogh lower bounds of :func:`dtw`: how far each query lies outside each
    reference's band envelope (Keogh & Ratanamahatana, 2005); never above the DTW distance."""
    w = band_width(Q.shape[1], band)
    padded = torch.nn.functional.pad(R.transpose(1, 2), (w, w), mode="replicate")
    upper = padded.unfold(2, 2 * w + 1, 1).amax(-1).transpose(1, 2)  # (Nr, P, F)
    lower = padded.unfold(2, 2 * w + 1, 1).amin(-1).transpose(1, 2)
    parts = []
    for a, b in _pair_chunks(Q.shape[0], R.shape[0]):
        q = Q[a:b, None]
        above = (q - upper[None]).clamp(min=0.0)
        below = (lower[None] - q).clamp(min=0.0)
        parts.append((above**2 + below**2).sum(dim=(2, 3)).sqrt())
    return torch.cat(parts)


def nearest_dtw(
    Q: torch.Tensor, R: torch.Tensor, band: float = 0.1, candidates: int = 16,
    exclude_self: bool = False,
) -> torch.Tensor:  # fmt: skip
    """(Nq,) DTW distance from each query to its nearest reference, searched among the
    ``candidates`` references with the smallest LB_Keogh bound (exact whenever the next bound
    is no smaller than the distance found, which the bound makes the usual case).
    ``exclude_self``: Q is R and each cycle's distance to itself is left out (leave-one-out)."""
    w = band_width(Q.shape[1], band)
    lb = lb_keogh(Q, R, band)
    if exclude_self:
        lb.fill_diagonal_(torch.inf)
    c = min(candidates, R.shape[0] - int(exclude_self))
    order = torch.topk(lb, c, dim=1, largest=False).indices  # (Nq, c)
    qi = torch.arange(Q.shape[0], device=Q.device).repeat_interleave(c)
    d = dtw_pairs(Q, R, qi, order.reshape(-1), w).reshape(-1, c)
    return d.amin(dim=1)


def dtw_pairs(
    Q: torch.Tensor, R: torch.Tensor, qi: torch.Tensor, ri: torch.Tensor, w: int
) -> torch.Tensor:
    """(M,) banded DTW of the pairs (Q[qi[m]], R[ri[m]]) with half-width ``w``, in chunks."""
    parts = [
        _dtw_rows(Q[qi[a : a + PAIRS_PER_CHUNK]], R[ri[a : a + PAIRS_PER_CHUNK]], w)
        for a in range(0, qi.shape[0], PAIRS_PER_CHUNK)
    ]
    return torch.cat(parts) if parts else Q.new_zeros(0)


def _dtw_rows(A: torch.Tensor, B: torch.Tensor, w: int) -> torch.Tensor:
    """Banded DTW of the pairs (A[m], B[m]), (M, P, F) each, one cost-matrix row at a time.

    Within a row the recurrence ``D[i, j] = c[i, j] + min(D[i-1, j], D[i-1, j-1], D[i, j-1])``
    is a min-plus scan: with ``a[j] = min(D[i-1, j], D[i-1, j-1])`` and the row's cumulative
    cost ``C``, ``D[i, j] = C[j] + cummin_k<=j (a[k] - C[k-1])``; so each row is a handful of
    tensor operations over (M, band). Band index b of row i is column ``i - w + b``, so
    ``D[i-1, j]`` sits at index b + 1 of the previous row and ``D[i-1, j-1]`` at b.
    """
    m, p = A.shape[0], A.shape[1]
    width = 2 * w + 1
    b_pad = torch.nn.functional.pad(B.transpose(1, 2), (w, w)).transpose(1, 2)  # (M, P+2w, F)
    column = torch.arange(width, device=A.device)
    inf_col = torch.full((m, 1), torch.inf, dtype=A.dtype, device=A.device)
    prev = torch.full((m, width), torch.inf, dtype=A.dtype, device=A.device)
    prev[:, w + 1] = 0.0  # so that row 0 starts its path at column 0 (index w)
    for i in range(p):
        valid = ((column + i - w) >= 0) & ((column + i - w) < p)  # (W,)
        cost = ((A[:, None, i, :] - b_pad[:, i : i + width]) ** 2).sum(-1) * valid  # (M, W)
        step = torch.minimum(prev, torch.cat([prev[:, 1:], inf_col], dim=1))
        if i == 0:
            step = torch.where(column == w, 0.0, torch.inf).to(A.dtype).expand(m, width)
        csum = torch.cumsum(cost, dim=1)
        best = torch.cummin(step - (csum - cost), dim=1).values
        prev = torch.where(valid, csum + best, torch.inf)
    return prev[:, w].clamp(min=0.0).sqrt()


def _znorm(X: torch.Tensor) -> torch.Tensor:
    """Each cycle z-normalised per feature over its samples (a constant cycle becomes 0)."""
    mu = X.mean(dim=1, keepdim=True)
    sd = X.std(dim=1, unbiased=False, keepdim=True)
    return torch.where(sd > 1e-12, (X - mu) / sd.clamp(min=1e-12), torch.zeros_like(X))


def sbd(Q: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """(Nq, Nr) shape-based distances in [0, 2]: 1 - max over shifts of the normalised
    cross-correlation (features summed), via FFT."""
    q, r = _znorm(Q), _znorm(R)
    p = Q.shape[1]
    n = 1 << (2 * p - 1).bit_length()
    fq = torch.fft.rfft(q, n=n, dim=1)  # (Nq, n/2+1, F)
    fr = torch.fft.rfft(r, n=n, dim=1).conj()
    norm_q = q.flatten(1).norm(dim=1)
    norm_r = r.flatten(1).norm(dim=1)
    parts = []
    for a, b in _pair_chunks(Q.shape[0], R.shape[0]):
        spec = (fq[a:b, None] * fr[None]).sum(-1)  # (nq, Nr, n/2+1)
        cc = torch.fft.irfft(spec, n=n, dim=-1).amax(dim=-1)  # (nq, Nr)
        denom = (norm_q[a:b, None] * norm_r[None]).clamp(min=1e-12)
        parts.append(1.0 - cc / denom)
    return torch.cat(parts)
