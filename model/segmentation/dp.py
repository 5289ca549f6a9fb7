"""Fast, batched, deterministic continuous piecewise-linear segmentation (torch, CPU or CUDA).

Problem (the one ``pwlf.PiecewiseLinFit(x=arange(L), y).fit(K)`` solves): find K - 1 real knots
``0 <= t_1 <= ... <= t_{K-1} <= L - 1`` minimising the sum of squared residuals (SSR) of the
best CONTINUOUS piecewise-linear function with those knots. For fixed knots this is linear least
squares in the hinge basis ``1, x, (x - t_1)+, ..., (x - t_{K-1})+``; multivariate windows share
the knots and the SSR is summed over features (each feature has its own coefficients).

Every Gram entry and right-hand side of that basis is a short polynomial in the knot positions
and in suffix sums of ``y`` and ``x y``, so the least-squares solves for ALL candidate knot
positions of a whole batch of windows are a few tensor operations (float64 throughout).

Moves, each evaluated for every candidate position at once and exact over its candidate set:

* single move: one knot to its best REAL position anywhere, the others fixed. For t in [j, j+1],
  ``(x - t)+ = u_j + s v_j`` on the integer grid (hinge u_j and step v_j at j + 1, s = j + 1 - t),
  so the explained sum of squares is a ratio of two quadratics in s, maximised at a root of a
  quadratic: closed form, per interval.
* pair move: two knots re-placed jointly anywhere on the integer grid (every pair a < b, a closed-
  form 2 x 2 solve each, O(L^2) per window), or as a "jump" (two knots inside one sample interval,
  which spans exactly a hinge plus a step: a continuous fit can rise arbitrarily steeply there).
* local pair move: two neighbouring knots jointly, nearby: the first on a 1/8-sample grid within
  +-2 samples and, for each of those, the second at its exact best real position (single move)
  within +-2 sample intervals.
* Newton: all knots jointly, each kept inside one sample interval per step (the SSR is smooth
  there and has kinks at integer knots; a knot at a kink minimum is left there).

Search and what is guaranteed:

* K = 1: the least-squares line. K = 2: one single move = the exact global optimum.
* K = 3: one pair move = the exact global optimum over integer knots and jumps; then rounds of
  Newton, local pair moves and single moves. The result is never worse than the best integer-knot
  fit; it is a local optimum in real positions (measured against pwlf: bench/segmentation.py).
* K >= 4: two starts (greedy insertion of knots by single moves; the knots between the segments
  of the optimal DIScontinuous fit, an exact O(K L^2) dynamic programme), each improved by rounds
  of pair moves over every pair of knots (on every ceil((L-2)/100)-th sample for long windows),
  Newton, local pair and single moves; the better one is kept. A local optimum of those
  neighbourhoods, not a certified global one.

Rounds stop when no move lowers the SSR by more than 1e-9 |y|^2. A move is kept only where the SSR
of its fitted coefficients is lower, so the search never gets worse; the SSR returned is summed
from the residuals of the final fit. Constant and linear windows keep evenly spaced knots (SSR 0);
L <= 2 gives evenly spaced knots and SSR 0. Same input and device -> same knots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.errors import DataError
from model.segmentation.base import Segmentation, as_window, knots_to_cuts

Tensor = torch.Tensor
_DT = torch.float64
_RIDGE = 1e-11  # relative ridge on the Jacobi-scaled Gram (coincident knots are singular)
_NOISE = 1e-12  # a column whose norm^2 drops below this fraction when residualised adds nothing
_COLLINEAR = 1e-9  # two residualised columns with sin^2(angle) below this count as collinear
_ACCEPT = 1e-12  # a move must lower the SSR by this fraction of sum(y^2) to be accepted
_LOCAL_RADIUS, _LOCAL_SUB = 2, 8  # local pair moves: +-2 samples on an eighth-sample grid
_PAIR_ELEMENTS = {"cpu": 2**19, "cuda": 2**24}  # (window, a, b) pair gains built at a time
_PAIR_GRID = 100  # K >= 4: pair moves over at most ~this many positions per knot
_ANOTHER_ROUND = 1e-9  # search on while some move lowered the SSR by this fraction of sum(y^2)


# ------------------------------------------------------------------ sufficient statistics
@dataclass(frozen=True)
class _Stats:
    """Suffix sums of one same-length batch: index m means "over samples x >= m"."""

    y: Tensor  # (B, L, F) centred per window and feature
    x: Tensor  # (L,)
    sy0: Tensor  # (B, L+1, F) sums of y
    sy1: Tensor  # (B, L+1, F) sums of x * y
    yy: Tensor  # (B,) sum of y^2 over samples and features


def _suffix(v: Tensor, dim: int) -> Tensor:
    """Suffix sums along ``dim`` with a trailing zero (length + 1)."""
    s = v.flip(dim).cumsum(dim).flip(dim)
    pad = list(s.shape)
    pad[dim] = 1
    return torch.cat([s, s.new_zeros(pad)], dim=dim)


def _stats(y: Tensor) -> _Stats:
    y = y - y.mean(dim=1, keepdim=True)  # (B, L, F); the constant column absorbs the mean
    x = torch.arange(y.shape[1], dtype=_DT, device=y.device)
    return _Stats(y, x, _suffix(y, 1), _suffix(x[:, None] * y, 1), (y * y).sum((1, 2)))


@dataclass(frozen=True)
class _Cols:
    """Basis columns ``(a x + b) * [x >= m]``; the three fields broadcast together."""

    a: Tensor
    b: Tensor
    m: Tensor  # int64

    def __getitem__(self, idx: object) -> _Cols:
        return _Cols(self.a[idx], self.b[idx], self.m[idx])  # type: ignore[index]


def _inner(st: _Stats, c1: _Cols, c2: _Cols) -> Tensor:
    """Inner products of columns over the grid x = 0..L-1, broadcast over their shapes.

    Written in the local coordinate k = x - m over the common support x >= m, with the closed
    forms of sum k^p (p = 0, 1, 2) over k < n = L - m: no large cancelling terms for long windows.
    """
    m = torch.maximum(c1.m, c2.m)
    mf = m.to(_DT)
    n = st.x.shape[0] - mf
    q1 = n * (n - 1) / 2
    q2 = q1 * (2 * n - 1) / 3
    e1, e2 = c1.a * mf + c1.b, c2.a * mf + c2.b  # column values at x = m
    return c1.a * c2.a * q2 + (c1.a * e2 + c2.a * e1) * q1 + e1 * e2 * n


def _rhs(st: _Stats, c: _Cols) -> Tensor:
    """(B, n, F) inner products of y with columns of shape (B or 1, n)."""
    B, F = st.y.shape[0], st.y.shape[2]
    n = c.m.shape[1]
    idx = c.m[:, :, None].expand(B, n, F)
    return c.a[..., None] * st.sy1.gather(1, idx) + c.b[..., None] * st.sy0.gather(1, idx)


def _gram(st: _Stats, c: _Cols) -> Tensor:
    """(Bc, P, P) Gram matrix of columns (Bc, P)."""
    return _inner(st, c[:, :, None], c[:, None, :])


def _basis(st: _Stats, knots: Tensor) -> _Cols:
    """Columns 1, x, (x - t_k)+ for knots (Bk, J): each field (Bk, J + 2)."""
    Bk, J = knots.shape
    one, zero = knots.new_ones(Bk, 1), knots.new_zeros(Bk, 1)
    a = torch.cat([zero, one, knots.new_ones(Bk, J)], 1)
    b = torch.cat([one, zero, -knots], 1)
    m_knot = (torch.floor(knots).long() + 1).clamp(0, st.x.shape[0])
    m = torch.cat([zero.long(), zero.long(), m_knot], 1)
    return _Cols(a, b, m)


def _all_intervals(st: _Stats) -> Tensor:
    """(1, L-1) indices j of the sample intervals [j, j + 1]."""
    return torch.arange(st.x.shape[0] - 1, device=st.x.device)[None]


def _intervals(j: Tensor) -> tuple[_Cols, _Cols]:
    """Hinge u_j = (x - j - 1)+ and step v_j = [x >= j + 1] for interval indices j (., n)."""
    m = j + 1
    one = torch.ones(m.shape, dtype=_DT, device=m.device)
    return _Cols(one, -m.to(_DT), m), _Cols(0 * one, one, m)


def _spd_solve(g: Tensor, r: Tensor) -> Tensor:
    """G^{-1} R for symmetric PSD G (B, P, P), R (B, P, n): Jacobi-scaled, with a tiny ridge."""
    d = torch.diagonal(g, dim1=1, dim2=2).clamp_min(1e-300).rsqrt()  # (B, P)
    gs = g * d[:, :, None] * d[:, None, :]
    gs = gs + _RIDGE * torch.eye(g.shape[1], dtype=g.dtype, device=g.device)
    inv, _ = torch.linalg.inv_ex(gs)  # P <= K + 1 is tiny: a batched inverse is fastest
    return (inv @ (r * d[:, :, None])) * d[:, :, None]


def _fit(st: _Stats, knots: Tensor) -> tuple[Tensor, Tensor, _Cols]:
    """Continuous fit with knots (B, J): SSR (B,), coefficients (B, P, F) and basis (B, P).

    The SSR is ``|y|^2 - 2 beta.R + beta.G beta``, that of the coefficients actually returned,
    from the sufficient statistics only (no pass over the samples).
    """
    c = _basis(st, knots)
    g, r = _gram(st, c), _rhs(st, c)
    beta = _spd_solve(g, r)  # (B, P, F)
    ssr = st.yy - 2 * (beta * r).sum((1, 2)) + (beta * (g @ beta)).sum((1, 2))
    return ssr.clamp_min(0.0), beta, c


def _residual_ssr(st: _Stats, knots: Tensor) -> Tensor:
    """(B,) SSR of the continuous fit summed from its residuals, sample by sample."""
    _, beta, c = _fit(st, knots)
    x = st.x[None, :, None]
    design = (c.a[:, None] * x + c.b[:, None]) * (x >= c.m[:, None])  # (B, L, P)
    res = st.y - design @ beta  # (B, L, F)
    return (res * res).sum((1, 2))


# ------------------------------------------------------------------ exact moves
@dataclass(frozen=True)
class _Fixed:
    """The knots a move keeps, as a basis; windows share it when there are no fixed knots."""

    cols: _Cols  # (Bf, P), Bf = 1 or B
    g: Tensor  # (Bf, P, P)
    beta: Tensor  # (B, P, F) least-squares coefficients of y on the fixed basis
    ssr: Tensor  # (B,) SSR of that fit


def _fixed(st: _Stats, knots: Tensor) -> _Fixed:
    shared = knots.shape[1] == 0
    cols = _basis(st, knots[:1] if shared else knots)
    g = _gram(st, cols)
    rhs = _rhs(st, cols)
    beta = _spd_solve(g.expand(rhs.shape[0], -1, -1), rhs)
    return _Fixed(cols, g, beta, st.yy - (rhs * beta).sum((1, 2)))


def _residualise(st: _Stats, fx: _Fixed, c: _Cols) -> tuple[Tensor, Tensor, Tensor]:
    """For candidate columns (1 or B, n): cross Gram C (., n, P), G^{-1} C^T (., P, n), and
    their products with y, the fixed basis projected out (B, n, F)."""
    cross = _inner(st, c[:, :, None], fx.cols[:, None, :])  # (Bf, n, P)
    w = _spd_solve(fx.g, cross.transpose(1, 2).contiguous())  # (Bf, P, n)
    r = _rhs(st, c) - cross @ fx.beta  # (B, n, F)
    return cross, w, r


def _interval_system(st: _Stats, fx: _Fixed, j: Tensor) -> tuple[Tensor, ...]:
    """Residualised 2 x 2 Gram (uu, uv, vv: (., n)), raw norms (., n) and products (B, n, F)
    of the hinge u_j and step v_j of the sample intervals j (1 or B, n)."""
    u, v = _intervals(j)
    cu, wu, ru = _residualise(st, fx, u)
    cv, wv, rv = _residualise(st, fx, v)
    uu0, uv0, vv0 = _inner(st, u, u), _inner(st, u, v), _inner(st, v, v)  # (1, n)
    uu = uu0 - (cu * wu.transpose(1, 2)).sum(-1)
    uv = uv0 - (cu * wv.transpose(1, 2)).sum(-1)
    vv = vv0 - (cv * wv.transpose(1, 2)).sum(-1)
    return uu, uv, vv, uu0, uv0, vv0, ru, rv


def _single_move(
    st: _Stats, fixed_knots: Tensor, integer_only: bool, intervals: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Best real position of one more knot given the fixed ones (exact, see the module doc), in
    the given sample intervals (1 or B, n) or anywhere: knot (B,) and the SSR it gives (B,)."""
    B = st.y.shape[0]
    fx = _fixed(st, fixed_knots)
    j_all = _all_intervals(st) if intervals is None else intervals
    uu, uv, vv, uu0, uv0, vv0, ru, rv = _interval_system(st, fx, j_all)
    q0, q1, q2 = (ru * ru).sum(-1), 2 * (ru * rv).sum(-1), (rv * rv).sum(-1)  # (B, n)
    d0, d1, d2 = uu, 2 * uv, vv
    ends = torch.stack([torch.zeros_like(q0), torch.ones_like(q0)], -1)  # s = 0, 1
    if integer_only:
        s = ends
    else:  # d/ds [Q(s) / D(s)] = 0  <=>  qa s^2 + qb s + qc = 0 (the cubic terms cancel)
        qa, qb, qc = q2 * d1 - q1 * d2, 2 * (q2 * d0 - q0 * d2), q1 * d0 - q0 * d1
        sq = torch.sqrt((qb * qb - 4 * qa * qc).clamp_min(0))
        h = -0.5 * (qb + torch.where(qb >= 0, sq, -sq))
        r1 = h / torch.where(qa == 0, torch.ones_like(qa), qa)
        r2 = qc / torch.where(h == 0, torch.ones_like(h), h)
        roots = torch.stack([r1, r2], -1).nan_to_num(0.0, 0.0, 0.0).clamp(0.0, 1.0)
        s = torch.cat([ends, roots], -1)  # (B, n, 4)
    num = q0[..., None] + (q1[..., None] + q2[..., None] * s) * s
    den = d0[..., None] + (d1[..., None] + d2[..., None] * s) * s
    raw = uu0[..., None] + (2 * uv0[..., None] + vv0[..., None] * s) * s
    ok = den > _NOISE * raw
    gain = torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), -torch.ones_like(num))
    flat = gain.reshape(B, -1)
    best = flat.argmax(1)
    col = torch.div(best, s.shape[-1], rounding_mode="floor")
    j = j_all.expand(B, -1).gather(1, col[:, None])[:, 0]
    t = (j + 1).to(_DT) - s.reshape(B, -1).gather(1, best[:, None])[:, 0]
    return t, fx.ssr - flat.gather(1, best[:, None])[:, 0]


def _hinges(t: Tensor) -> _Cols:
    """Hinge columns (x - t)+ for knots t of any shape."""
    return _Cols(torch.ones_like(t), -t, torch.floor(t).long() + 1)


def _pair_elements(st: _Stats) -> int:
    return _PAIR_ELEMENTS["cuda" if st.y.is_cuda else "cpu"]


def _slice(t: Tensor, rows: slice) -> Tensor:
    """Rows of a per-window tensor, or the tensor itself when windows share it (leading dim 1)."""
    return t if t.shape[0] == 1 else t[rows]


def _best_pair(st: _Stats, fx: _Fixed, ta: Tensor, tb: Tensor | None) -> tuple[Tensor, Tensor]:
    """Best two knots ta[i] < tb[j] to add to the fixed basis: knots (B, 2), explained SS (B,).

    ``ta`` (1 or B, na), ``tb`` (1 or B, nb) or None for ``tb = ta``. Exact 2 x 2 least squares on
    the residualised hinges, for every pair: [r_a r_b] [[g_aa g_ab] [g_ab g_bb]]^{-1} [r_a r_b]^T,
    summed over features. The (windows, na, nb) arrays are built a few windows at a time.
    """
    tb_ = ta if tb is None else tb
    ha, hb = _hinges(ta), _hinges(tb_)
    ca, wa, ra = _residualise(st, fx, ha)
    cb, wb, rb = (ca, wa, ra) if tb is None else _residualise(st, fx, hb)
    raw_a, raw_b = _inner(st, ha, ha), _inner(st, hb, hb)  # (., n)
    g_a = raw_a - (ca * wa.transpose(1, 2)).sum(-1)
    g_b = raw_b - (cb * wb.transpose(1, 2)).sum(-1)
    graw = _inner(st, ha[:, :, None], hb[:, None, :])  # (., na, nb)
    B, na, nb = ra.shape[0], ta.shape[1], tb_.shape[1]
    step = max(1, _pair_elements(st) // (na * nb))
    knots, gains = [], []
    for lo in range(0, B, step):
        rows = slice(lo, lo + step)
        g = _slice(graw, rows) - _slice(ca, rows) @ _slice(wb, rows)  # residualised Gram
        ga, gb = _slice(g_a, rows), _slice(g_b, rows)
        det = ga[:, :, None] * gb[:, None, :] - g * g
        ok = (ga > _NOISE * _slice(raw_a, rows))[:, :, None] & (gb > _NOISE * _slice(raw_b, rows))[
            :, None, :
        ]
        ok &= det > _COLLINEAR * ga[:, :, None] * gb[:, None, :]
        ok &= _slice(ta, rows)[:, :, None] < _slice(tb_, rows)[:, None, :]
        inv_det = torch.where(ok, 1 / torch.where(ok, det, torch.ones_like(det)), 0.0)
        ra_, rb_ = ra[rows], rb[rows]  # (b, n, F)
        # <r_a, r_b>; with one feature an outer product, faster than a matrix product
        cross = ra_ * rb_.transpose(1, 2) if ra_.shape[2] == 1 else ra_ @ rb_.transpose(1, 2)
        gain = (ra_ * ra_).sum(-1)[:, :, None] * (gb[:, None, :] * inv_det)
        gain += (rb_ * rb_).sum(-1)[:, None, :] * (ga[:, :, None] * inv_det)
        gain -= cross * (2 * g * inv_det)
        gain = torch.where(ok, gain, -1.0).reshape(gain.shape[0], -1)
        best = gain.argmax(1)
        i = torch.div(best, nb, rounding_mode="floor")
        a = _slice(ta, rows).expand(len(best), na).gather(1, i[:, None])
        b = _slice(tb_, rows).expand(len(best), nb).gather(1, (best - i * nb)[:, None])
        knots.append(torch.cat([a, b], 1))
        gains.append(gain.gather(1, best[:, None])[:, 0])
    return torch.cat(knots), torch.cat(gains)


def _pair_move(st: _Stats, fixed_knots: Tensor, stride: int = 1) -> Tensor:
    """(B, 2) best two more knots: any pair a < b on the integer grid (every ``stride``-th sample),
    or a jump (two knots inside one sample interval, any interval)."""
    L = st.x.shape[0]
    fx = _fixed(st, fixed_knots)
    grid = torch.arange(1, L - 1, stride, device=st.x.device).to(_DT)[None]  # (1, n) knots
    knots_pair, gain_pair = _best_pair(st, fx, grid, None)
    # jump: hinge + step at j + 1 = two knots inside interval [j, j + 1] (any two positions)
    uu, uv, vv, uu0, _, vv0, ru, rv = _interval_system(st, fx, _all_intervals(st))
    det_j = uu * vv - uv * uv
    ok_j = (uu > _NOISE * uu0) & (vv > _NOISE * vv0) & (det_j > _COLLINEAR * uu * vv)
    num_j = (ru * ru).sum(-1) * vv - 2 * (ru * rv).sum(-1) * uv + (rv * rv).sum(-1) * uu
    gain_j = torch.where(ok_j, num_j / torch.where(ok_j, det_j, torch.ones_like(det_j)), -1.0)
    best_j = gain_j.argmax(1)
    gain_jump = gain_j.gather(1, best_j[:, None])[:, 0]
    knots_jump = best_j.to(_DT)[:, None] + torch.tensor([0.25, 0.75], dtype=_DT, device=grid.device)
    return torch.where((gain_jump > gain_pair)[:, None], knots_jump, knots_pair)


def _repeat(st: _Stats, n: int) -> _Stats:
    """Each window's statistics ``n`` times in a row (window-major)."""
    return _Stats(
        st.y.repeat_interleave(n, 0),
        st.x,
        st.sy0.repeat_interleave(n, 0),
        st.sy1.repeat_interleave(n, 0),
        st.yy.repeat_interleave(n, 0),
    )


def _local_pair_move(st: _Stats, knots: Tensor, on_grid: int, exact: int) -> Tensor:
    """(B, J) knots with two of them re-placed jointly, nearby, the others fixed: knot ``on_grid``
    on a 1/_LOCAL_SUB-sample grid within _LOCAL_RADIUS samples, knot ``exact`` at its exact best
    real position (single move) within _LOCAL_RADIUS sample intervals, for each of those."""
    B, L = knots.shape[0], st.x.shape[0]
    r, sub = _LOCAL_RADIUS, _LOCAL_SUB
    offsets = torch.arange(-r * sub, r * sub + 1, device=knots.device).to(_DT) / sub
    ta = (knots[:, on_grid : on_grid + 1] + offsets).clamp(0.0, L - 1.0)  # (B, na)
    na = ta.shape[1]
    others = _without(knots, (on_grid, exact)).repeat_interleave(na, 0)
    fixed = torch.cat([others, ta.reshape(-1, 1)], 1)  # (B na, J - 1)
    window = torch.arange(-r, r + 1, device=knots.device)
    near = torch.floor(knots[:, exact : exact + 1]).long() + window
    near = near.clamp(0, L - 2).repeat_interleave(na, 0)  # (B na, 2r + 1) intervals
    tb, ssr = _single_move(_repeat(st, na), fixed, False, near)
    pick = torch.arange(B, device=knots.device) * na + ssr.reshape(B, na).argmin(1)
    out = knots.clone()
    out[:, on_grid], out[:, exact] = ta.reshape(-1)[pick], tb[pick]
    return out


# ------------------------------------------------------------------ search
def _accept(
    st: _Stats, knots: Tensor, ssr: Tensor, proposal: Tensor, tol: float
) -> tuple[Tensor, Tensor, bool]:
    """Take ``proposal`` (sorted) where its SSR is lower by > tol * sum(y^2); the flag says
    whether some window improved by more than _ANOTHER_ROUND."""
    proposal = proposal.sort(1).values
    new = _fit(st, proposal)[0]
    better = new < ssr - tol * st.yy
    much = bool((new < ssr - _ANOTHER_ROUND * st.yy).any())
    return torch.where(better[:, None], proposal, knots), torch.where(better, new, ssr), much


def _without(knots: Tensor, drop: Sequence[int]) -> Tensor:
    return knots[:, [i for i in range(knots.shape[1]) if i not in drop]]


def _gradient(st: _Stats, knots: Tensor, m: Tensor) -> Tensor:
    """(B, J) dSSR/dt_k = 2 sum_f beta_kf sum_{x >= m_k} r_f(x), the derivative inside the sample
    interval [m_k - 1, m_k] (one-sided at its ends, where the SSR has kinks)."""
    _, beta, c = _fit(st, knots)
    step = _Cols(torch.zeros_like(knots), torch.ones_like(knots), m)  # [x >= m_k]
    tail_cols = _inner(st, step[:, :, None], c[:, None, :])  # (B, J, P)
    tail_y = st.sy0.gather(1, m[:, :, None].expand(-1, -1, st.y.shape[2]))  # (B, J, F)
    r_tail = tail_y - tail_cols @ beta  # (B, J, F) sums of residuals over x >= m_k
    return 2 * (beta[:, 2:] * r_tail).sum(-1)


def _newton(st: _Stats, knots: Tensor, ssr: Tensor, iters: int) -> tuple[Tensor, Tensor]:
    """Projected Newton on all knots jointly, each knot kept in one sample interval per step.

    Inside an interval the SSR is smooth; at an integer knot the interval is chosen by the
    one-sided derivatives (a knot whose both sides go up sits at a kink minimum and is frozen).
    Hessian: finite differences of the analytic gradient inside the intervals. Steps are kept
    only where they lower the SSR; a per-window trust radius shrinks otherwise."""
    B, J = knots.shape
    L = st.x.shape[0]
    eye = torch.eye(J, dtype=_DT, device=knots.device)
    radius = torch.ones(B, 1, dtype=_DT, device=knots.device)
    for _ in range(iters):
        lo = torch.floor(knots)
        g_right = _gradient(st, knots, (lo + 1).long().clamp(0, L))
        g_left = _gradient(st, knots, lo.long().clamp(0, L))
        on_grid = knots == lo
        go_left = on_grid & (g_right >= 0) & (g_left > 0)
        frozen = on_grid & (g_right >= 0) & (g_left <= 0)
        box = torch.where(go_left, lo - 1, lo).clamp(0, L - 2)  # (B, J) interval [box, box + 1]
        m = (box + 1).long()
        g0 = torch.where(go_left, g_left, g_right)
        h = torch.where(knots < box + 0.5, 1e-6, -1e-6).to(_DT)  # (B, J) into the interval
        cols = [
            (_gradient(st, knots + h[:, k : k + 1] * eye[k], m) - g0) / h[:, k : k + 1]
            for k in range(J)
        ]
        hess = torch.stack(cols, 2)  # (B, J, J)
        keep = (~frozen).to(_DT)
        hess = 0.5 * (hess + hess.transpose(1, 2)) * keep[:, :, None] * keep[:, None, :]
        hess = hess + torch.diag_embed(1 - keep)
        g0 = g0 * keep
        delta = -_spd_solve(hess, g0[:, :, None])[:, :, 0]
        descent = (delta * g0).sum(1, keepdim=True) < 0
        diag = torch.diagonal(hess, dim1=1, dim2=2).abs().clamp_min(1e-12)
        delta = torch.where(descent, delta, -g0 / diag)
        delta = torch.maximum(torch.minimum(delta, radius), -radius)
        proposal = torch.minimum(torch.maximum(knots + delta, box), box + 1)
        new_knots, ssr, _ = _accept(st, knots, ssr, proposal, 0.0)
        moved = (new_knots != knots).any(1, keepdim=True)
        radius = torch.where(moved, radius, 0.1 * radius)
        done = ((proposal - knots).abs().amax(1, keepdim=True) < 1e-8) | (radius < 1e-6)
        knots = new_knots
        if bool(done.all()):
            break
    return knots, ssr


def _line_costs(st: _Stats, min_len: int) -> Tensor:
    """(B, L, L) SSR of the least-squares line through samples i..j at [i, j], summed over
    features; inf where j - i + 1 < min_len."""
    x, y = st.x, st.y  # (L,), (B, L, F)
    zero = x.new_zeros(1, 3)
    px = torch.cat([zero, torch.stack([torch.ones_like(x), x, x * x], 1).cumsum(0)])  # (L+1, 3)
    py = torch.stack([y, x[:, None] * y, y * y], -1).cumsum(1)  # (B, L, F, 3)
    py = torch.cat([torch.zeros_like(py[:, :1]), py], 1)  # (B, L+1, F, 3)
    n, sx, sxx = (px[None, 1:] - px[:-1, None]).unbind(-1)  # (L, L) each, index [i, j]
    sy, sxy, syy = (py[:, None, 1:] - py[:, :-1, None]).unbind(-1)  # (B, L, L, F) each
    long_enough = n >= min_len
    n = torch.where(long_enough, n, torch.ones_like(n))
    vxx = (sxx - sx * sx / n)[None, :, :, None]
    cxy = sxy - (sx / n)[None, :, :, None] * sy
    fit = torch.where(vxx > 0, cxy * cxy / torch.where(vxx > 0, vxx, torch.ones_like(vxx)), 0.0)
    cost = (syy - sy * sy / n[None, :, :, None] - fit).sum(-1)  # (B, L, L)
    return torch.where(long_enough, cost, float("inf"))


def _segment_dp(st: _Stats, n_segments: int, min_len: int = 2) -> Tensor:
    """(B, K-1) knots between the segments of the optimal DIScontinuous K-line fit (exact dynamic
    programme over integer boundaries, O(K L^2)): a start for the continuous search (K >= 4)."""
    n_batch, length = st.y.shape[:2]
    if length < min_len * n_segments:
        even = torch.linspace(0, length - 1, n_segments + 1, dtype=_DT, device=st.x.device)
        return even[1:-1].expand(n_batch, n_segments - 1)
    step = max(1, _pair_elements(st) // (length * length * st.y.shape[2]))
    out = []
    for lo in range(0, n_batch, step):
        rows = slice(lo, lo + step)
        part = _Stats(st.y[rows], st.x, st.sy0[rows], st.sy1[rows], st.yy[rows])
        cost = _line_costs(part, min_len)  # (b, L, L): segment [start i, end j]
        best = cost[:, 0]  # (b, L): best fit of samples 0..j with one segment
        starts = []
        for _ in range(n_segments - 1):  # a segment starting at i after the best fit of 0..i-1
            before = torch.cat([torch.full_like(best[:, :1], float("inf")), best[:, :-1]], 1)
            best, start = (before[:, :, None] + cost).min(1)
            starts.append(start)  # (b, L): start of the last segment when it ends at j
        knots = []
        end = torch.full((cost.shape[0],), length - 1, dtype=torch.long, device=st.x.device)
        for start in reversed(starts):
            first = start.gather(1, end[:, None])[:, 0]
            knots.append(first.to(_DT) - 0.5)  # a knot between the two segments
            end = first - 1
        out.append(torch.stack(knots[::-1], 1))
    return torch.cat(out)


def _local_search(
    st: _Stats, knots: Tensor, ssr: Tensor, refine: bool, max_rounds: int
) -> tuple[Tensor, Tensor]:
    """Rounds of pair, local pair, Newton and single moves until none improves by much."""
    J = knots.shape[1]
    pairs = [(i, j) for i in range(J) for j in range(i + 1, J)] if J >= 3 else []
    stride = -(-(st.x.shape[0] - 2) // _PAIR_GRID)  # a coarser grid for long windows
    for _ in range(max_rounds):
        moved = False
        for pair in pairs:  # any two knots, re-placed jointly anywhere (integer grid, jumps)
            keep = _without(knots, pair)
            proposal = torch.cat([keep, _pair_move(st, keep, stride)], 1)
            knots, ssr, ok = _accept(st, knots, ssr, proposal, _ACCEPT)
            moved |= ok
        if refine:
            knots, ssr = _newton(st, knots, ssr, iters=8)
            for k in range(J - 1):  # neighbouring pairs, jointly, finely, nearby
                proposal = _local_pair_move(st, knots, k, k + 1)
                knots, ssr, ok = _accept(st, knots, ssr, proposal, _ACCEPT)
                moved |= ok
        for k in range(J):  # each knot to its best real position anywhere, the others fixed
            keep = _without(knots, (k,))
            proposal = torch.cat([keep, _single_move(st, keep, not refine)[0][:, None]], 1)
            knots, ssr, ok = _accept(st, knots, ssr, proposal, _ACCEPT)
            moved |= ok
        if not moved:
            break
    return knots, ssr


def _search(st: _Stats, n_segments: int, refine: bool, max_rounds: int) -> Tensor:
    """(B, K-1) knots found by the moves described in the module docstring."""
    B, L = st.y.shape[0], st.x.shape[0]
    J = n_segments - 1
    even = torch.linspace(0, L - 1, n_segments + 1, dtype=_DT, device=st.x.device)[1:-1]
    knots = even.expand(B, J).clone()  # kept where nothing beats it (constant, linear windows)
    if J == 0 or L <= 2 or B == 0:
        return knots
    ssr = _fit(st, knots)[0]
    if J == 1:
        return _accept(st, knots, ssr, _single_move(st, knots[:, :0], not refine)[0][:, None], 0.0)[
            0
        ]
    if J == 2:
        starts = [_pair_move(st, knots[:, :0])]
    else:
        greedy = knots[:, :0]
        for _ in range(J):  # greedy: add the best knot given those placed so far
            greedy = (
                torch.cat([greedy, _single_move(st, greedy, not refine)[0][:, None]], 1)
                .sort(1)
                .values
            )
        starts = [greedy, _segment_dp(st, n_segments)]
    best_knots, best_ssr = knots, ssr
    for start in starts:
        k, s, _ = _accept(st, knots, ssr, start, 0.0)
        k, s = _local_search(st, k, s, refine, max_rounds)
        better = s < best_ssr
        best_knots, best_ssr = (
            torch.where(better[:, None], k, best_knots),
            torch.minimum(s, best_ssr),
        )
    return best_knots


def fit_pwl(
    y: Tensor, n_segments: int, *, refine: bool = True, max_rounds: int = 20
) -> tuple[Tensor, Tensor]:
    """Continuous PWL least-squares fit with ``n_segments`` lines of same-length windows.

    ``y``: (B, L) or (B, L, F) on any device, x = 0..L-1. Returns sorted real knots (B, K-1)
    float64 in [0, L-1] and the SSR (B,) float64 of the continuous fit with those knots, summed
    over features and computed from the residuals. ``refine=False`` keeps the knots on the integer
    grid (for K = 3 the exact optimum there). ``max_rounds`` bounds the local-search rounds.
    """
    if y.ndim == 2:
        y = y[:, :, None]
    if y.ndim != 3 or y.shape[1] < 1 or n_segments < 1:
        raise DataError(
            f"fit_pwl needs y of shape (B, L[, F]) with L >= 1 and n_segments >= 1, got "
            f"{tuple(y.shape)} and {n_segments}"
        )
    st = _stats(y.to(_DT))
    knots = _search(st, n_segments, refine, max_rounds)
    return knots, _residual_ssr(st, knots)


def fit_windows(
    windows: Sequence[np.ndarray],
    n_segments: int,
    *,
    device: str | torch.device = "cpu",
    refine: bool = True,
    max_elements: int | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """:func:`fit_pwl` over windows of any lengths: grouped by length, at most
    ``max_elements // (L (K + 2))`` windows per call (default 2^20 elements on CPU, 2^24 on
    CUDA; the arrays of a call are (windows, L, K + 2) and, a few windows at a time, (., L, L)).

    Returns the real knots of each window ((K-1,) float64 arrays) and the SSR (N,) float64.
    """
    arrays = [as_window(w) for w in windows]
    if arrays and len({a.shape[1] for a in arrays}) > 1:
        raise DataError("all windows in one call must have the same number of features")
    dev = torch.device(device)
    budget = max_elements or (2**24 if dev.type == "cuda" else 2**20)
    knots: list[np.ndarray] = [np.zeros(0)] * len(arrays)
    ssr = np.zeros(len(arrays))
    by_length: dict[int, list[int]] = {}
    for i, a in enumerate(arrays):
        by_length.setdefault(a.shape[0], []).append(i)
    for L, idx in sorted(by_length.items()):
        chunk = max(1, budget // (L * (n_segments + 2)))
        for start in range(0, len(idx), chunk):
            part = idx[start : start + chunk]
            y = torch.as_tensor(np.stack([arrays[i] for i in part]), dtype=_DT, device=dev)
            k, s = fit_pwl(y, n_segments, refine=refine)  # (b, K-1), (b,)
            k_np, s_np = k.cpu().numpy(), s.cpu().numpy()
            for row, i in enumerate(part):
                knots[i], ssr[i] = k_np[row], s_np[row]
    return knots, ssr


class DPSegmenter:
    """The fast segmenter (the default): batched exact moves, see the module docstring.

    ``device``: where the search runs ("cpu", "cuda", ...). ``refine=False`` keeps knots on the
    integer grid (or jumps). Breakpoints follow the reference rule ``int(t)`` of the real knots,
    made strictly increasing; windows need at least ``n_segments + 1`` samples.
    """

    def __init__(
        self,
        n_segments: int = 3,
        device: str | torch.device = "cpu",
        refine: bool = True,
        max_elements: int | None = None,
    ) -> None:
        if n_segments < 1:
            raise DataError(f"n_segments must be >= 1, got {n_segments}")
        self.n_segments = n_segments
        self.device = torch.device(device)
        self.refine = refine
        self.max_elements = max_elements

    def fit(self, windows: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """Real knots per window and SSR of the continuous fits (see :func:`fit_windows`)."""
        return fit_windows(
            windows,
            self.n_segments,
            device=self.device,
            refine=self.refine,
            max_elements=self.max_elements,
        )

    def segment(self, windows: Sequence[np.ndarray]) -> Segmentation:
        lengths = np.array([as_window(w).shape[0] for w in windows], dtype=np.int64)
        knots_to_cuts(np.zeros((len(lengths), self.n_segments - 1)), lengths)  # fail early
        knots, _ = self.fit(windows)
        inner = np.stack(knots) if knots else np.zeros((0, self.n_segments - 1))
        return Segmentation(knots_to_cuts(inner, lengths))
