"""TS-DAGMM's reconstruction features of a window, over its true samples only (padding never
enters): DAGMM's relative distance and cosine similarity plus temporal errors.

Shapes: B windows padded to T samples with F features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def lengths_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """(B, T) bool, True on each window's true samples."""
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


def band_alignment_error(
    x: torch.Tensor, y: torch.Tensor, lengths: torch.Tensor, band: float
) -> torch.Tensor:
    """Symmetric band-limited alignment error of x and y, both (B, T, F) -> (B,).

    For each true sample t of x, the smallest mean-absolute distance to y_s with
    |s - t| <= max(1, round(band * L)) (s a true sample), averaged over t; the same from y to x;
    the mean of both directions. Not DTW (no monotone path), but equally forgiving of small
    phase shifts. band = 0 gives the plain MAE.
    """
    b, t, _ = x.shape
    lf = lengths.to(x.dtype)
    radius = torch.clamp(torch.round(band * lf), min=1.0) if band > 0 else torch.zeros_like(lf)
    max_r = int(radius.max().item()) if b else 0
    mask = lengths_mask(lengths, t)  # (B, T)
    steps = torch.arange(t, device=x.device)[None, :]  # (1, T)
    best_xy = torch.full((b, t), math.inf, dtype=x.dtype, device=x.device)
    best_yx = torch.full_like(best_xy, math.inf)
    for o in range(-max_r, max_r + 1):
        src = steps + o  # (1, T): y index matched to x at t
        ok = (src >= 0) & (src < lengths[:, None]) & (abs(o) <= radius[:, None]) & mask
        idx = src.clamp(0, t - 1).expand(b, t)
        y_o = torch.gather(y, 1, idx[:, :, None].expand_as(y))  # (B, T, F)
        x_o = torch.gather(x, 1, idx[:, :, None].expand_as(x))
        d_xy = (x - y_o).abs().mean(-1).masked_fill(~ok, math.inf)  # (B, T)
        d_yx = (y - x_o).abs().mean(-1).masked_fill(~ok, math.inf)
        best_xy = torch.minimum(best_xy, d_xy)
        best_yx = torch.minimum(best_yx, d_yx)
    zero = torch.zeros_like(best_xy)
    total = torch.where(mask, best_xy, zero).sum(1) + torch.where(mask, best_yx, zero).sum(1)
    return 0.5 * total / lf


def reconstruction_features(
    x: torch.Tensor,
    recon: torch.Tensor,
    lengths: torch.Tensor,
    names: Sequence[str],
    *,
    band: float,
    eps: float,
    log_errors: bool = False,
    error_eps: float = 1e-6,
) -> torch.Tensor:
    """(B, len(names)) per-window reconstruction features over the true samples only.

    x, recon (B, T, F); padding positions are zeroed before any sum. With ``log_errors`` each
    error becomes log(err + error_eps) and the cosine similarity log(1 - cos + error_eps).
    """
    _b, t, f = x.shape
    mask = lengths_mask(lengths, t)[:, :, None].to(x.dtype)  # (B, T, 1)
    x = x * mask
    recon = recon * mask
    n = lengths.to(x.dtype) * f  # (B,) true values per window
    err = recon - x
    out: dict[str, torch.Tensor] = {}
    if "rd" in names or "cos" in names:
        xx = (x * x).sum((1, 2)) + eps * n
        rr = (recon * recon).sum((1, 2)) + eps * n
        # clamped so a perfect reconstruction has a finite gradient
        out["rd"] = torch.sqrt(((err * err).sum((1, 2)) / xx).clamp_min(1e-24))
        out["cos"] = (x * recon).sum((1, 2)) / torch.sqrt(xx * rr)
    out["mse"] = (err * err).sum((1, 2)) / n
    out["mae"] = err.abs().sum((1, 2)) / n
    if "align" in names:
        out["align"] = band_alignment_error(x, recon, lengths, band)
    if "trend" in names:
        dmask = mask[:, 1:] * mask[:, :-1]  # (B, T-1, 1) both ends true
        derr = (recon.diff(dim=1) - x.diff(dim=1)) * dmask
        n_diff = ((lengths - 1).to(x.dtype) * f).clamp_min(1.0)
        out["trend"] = derr.abs().sum((1, 2)) / n_diff
    feats = torch.stack([out[k] for k in names], dim=1)  # (B, len(names))
    if log_errors:
        # every feature becomes a log distance: log(err + eps), cos as log(1 - cos + eps)
        is_cos = torch.tensor([k == "cos" for k in names], device=feats.device)
        feats = torch.log(torch.where(is_cos, 1.0 - feats, feats).clamp_min(0.0) + error_eps)
    return feats
