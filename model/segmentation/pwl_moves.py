"""The exact least-squares moves behind :mod:`model.segmentation.dp` (see its docstring).

For fixed knots, the continuous piecewise-linear least-squares fit is linear in the hinge basis
``1, x, (x - t_1)+, ...``; every Gram entry and right-hand side is a short polynomial in the knot
positions and in suffix sums of ``y`` and ``x y`` (:class:`_Stats`), so a move is evaluated for
every candidate position of a whole batch of windows at once (float64 throughout):

* :func:`_single_move`: one knot to its best real position, the others fixed (closed form);
* :func:`_pair_move`: two knots jointly anywhere on the integer grid, or as a jump;
* :func:`_local_pair_move`: two neighbouring knots jointly, finely, nearby.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

Tensor = torch.Tensor
_DT = torch.float64
_RIDGE = 1e-11  # relative ridge on the Jacobi-scaled Gram (coincident knots are singular)
_NOISE = 1e-12  # a column whose norm^2 drops below this fraction when residualised adds nothing
_COLLINEAR = 1e-9  # two residualised columns with sin^2(angle) below this count as collinear
_LOCAL_RADIUS, _LOCAL_SUB = 2, 8  # local pair moves: +-2 samples on an eighth-sample grid
_MANY_ROWS = 1024  # Gram matrices of at least this many bases: the block of 1, x taken once
# elements of the largest per-row arrays of one chunk of windows (pair gains (window, a, b), the
# local pair move's per-row columns): on the CPU 2^17 (1 MiB), twice as fast as 2^19 for the pair
# move (arrays that stay in cache and are not handed back to the OS page by page between chunks)
_PAIR_ELEMENTS = {"cpu": 2**17, "cuda": 2**24}


# ------------------------------------------------------------------ sufficient statistics
@dataclass(frozen=True)
class _Stats:
    """Suffix sums of one same-length batch: index m means "over samples x >= m".

    A move may run ``rep`` rows per window (:func:`_repeat`): rows ``w rep .. w rep + rep - 1``
    are window w; ``yy`` has one entry per row, the other fields one per window."""

    y: Tensor  # (B, L, F) centred per window and feature
    x: Tensor  # (L,)
    sy0: Tensor  # (B, L+1, F) sums of y
    sy1: Tensor  # (B, L+1, F) sums of x * y
    yy: Tensor  # (B rep,) sum of y^2 over samples and features
    rep: int = 1

    @property
    def rows(self) -> int:
        return self.yy.shape[0]

    def select(self, idx: Tensor) -> _Stats:
        """The statistics of windows ``idx`` (rep 1)."""
        return _Stats(self.y[idx], self.x, self.sy0[idx], self.sy1[idx], self.yy[idx])


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
    """(rows, n, F) inner products of y with columns of shape (1, n) (shared), (B, n) (one per
    window) or (rows, n) (one per row, :func:`_repeat`): a window's ``rep`` rows are gathered from
    its one copy of the suffix sums."""
    B, F = st.y.shape[0], st.y.shape[2]
    per = max(1, c.m.shape[0] // B)  # 1: shared or per window; rep: per row
    n = c.m.shape[1] * per
    a, b, m = (v.reshape(-1, n).expand(B, n) for v in (c.a, c.b, c.m))
    idx = m[:, :, None].expand(B, n, F)
    out = a[..., None] * st.sy1.gather(1, idx) + b[..., None] * st.sy0.gather(1, idx)
    return _per_row(st, out.reshape(B * per, -1, F))


def _per_row(st: _Stats, t: Tensor) -> Tensor:
    """A per-window tensor (B, ...) repeated for the ``rep`` rows of each window; a shared (1, ...)
    or per-row one as it is."""
    return t.repeat_interleave(st.rep, 0) if st.rep > 1 and t.shape[0] == st.y.shape[0] else t


def _gram(st: _Stats, c: _Cols) -> Tensor:
    """(Bc, P, P) Gram matrix of basis columns (Bc, P), which start with 1 and x.

    For many rows the block of 1 and x is taken once (it is the same for every row) and the
    rest per row; _inner is symmetric bit for bit, so this equals the full product."""
    Bc, P = c.m.shape
    if Bc < _MANY_ROWS or P <= 2:
        return _inner(st, c[:, :, None], c[:, None, :])
    lines, hinges = c[:1, :2], c[:, 2:]
    mixed = _inner(st, lines[:, :, None], hinges[:, None, :])  # (Bc, 2, P - 2)
    top = torch.cat([_inner(st, lines[:, :, None], lines[:, None, :]).expand(Bc, 2, 2), mixed], 2)
    bottom = torch.cat(
        [mixed.transpose(1, 2), _inner(st, hinges[:, :, None], hinges[:, None, :])], 2
    )
    return torch.cat([top, bottom], 1)


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


def _intervals(j: Tensor) -> _Cols:
    """Hinges u_j = (x - j - 1)+ then steps v_j = [x >= j + 1] (., 2n) of the sample intervals
    j (., n)."""
    m = j + 1
    one = torch.ones(m.shape, dtype=_DT, device=m.device)
    return _Cols(
        torch.cat([one, 0 * one], 1), torch.cat([-m.to(_DT), one], 1), torch.cat([m, m], 1)
    )


def _spd_inverse(g: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric PSD G (B, P, P), Jacobi-scaled by d = diag(G)^-1/2 (B, P) with a tiny ridge:
    the inverse of the scaled matrix and d; G^{-1} R = (inv @ (R d)) d."""
    d = torch.diagonal(g, dim1=1, dim2=2).clamp_min(1e-300).rsqrt()  # (B, P)
    gs = g * d[:, :, None] * d[:, None, :]
    torch.diagonal(gs, dim1=1, dim2=2).add_(_RIDGE)
    inv, _ = torch.linalg.inv_ex(gs)  # P <= K + 1 is tiny: a batched inverse is fastest
    return inv, d


def _spd_solve(g: Tensor, r: Tensor) -> Tensor:
    """G^{-1} R for symmetric PSD G (B, P, P), R (B, P, n): Jacobi-scaled, with a tiny ridge."""
    inv, d = _spd_inverse(g)
    return (inv @ (r * d[:, :, None])) * d[:, :, None]


def _least_squares(st: _Stats, c: _Cols) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """SSR (B,) and coefficients (B, P, F) of the fit on the basis c (B, P), and the scaled
    inverse Gram and its scale (:func:`_spd_inverse`)."""
    g, r = _gram(st, c), _rhs(st, c)
    inv, d = _spd_inverse(g)
    beta = (inv @ (r * d[:, :, None])) * d[:, :, None]  # (B, P, F)
    ssr = st.yy - 2 * (beta * r).sum((1, 2)) + (beta * (g @ beta)).sum((1, 2))
    return ssr.clamp_min(0.0), beta, inv, d


def _fit(st: _Stats, knots: Tensor) -> tuple[Tensor, Tensor, _Cols]:
    """Continuous fit with knots (B, J): SSR (B,), coefficients (B, P, F) and basis (B, P).

    The SSR is ``|y|^2 - 2 beta.R + beta.G beta``, that of the coefficients actually returned,
    from the sufficient statistics only (no pass over the samples).
    """
    c = _basis(st, knots)
    ssr, beta, _, _ = _least_squares(st, c)
    return ssr, beta, c


def _fit_inverse(st: _Stats, knots: Tensor) -> tuple[Tensor, Tensor, _Cols, Tensor]:
    """:func:`_fit` and the inverse Gram matrix (B, P, P) it solved with."""
    c = _basis(st, knots)
    ssr, beta, inv, d = _least_squares(st, c)
    return ssr, beta, c, inv * d[:, None, :] * d[:, :, None]


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
    their products with y, the fixed basis projected out (rows, n, F).

    The fixed basis starts with the columns 1, x of every row: their cross products are taken
    once for the candidate columns (bit for bit what the per-row products would be)."""
    lines = _inner(st, c[:, :, None], fx.cols[:1, None, :2])  # (1 or B, n, 2)
    if fx.cols.m.shape[1] > 2:
        c_rows = _Cols(_per_row(st, c.a), _per_row(st, c.b), _per_row(st, c.m))
        hinges = _inner(st, c_rows[:, :, None], fx.cols[:, None, 2:])  # (., n, P - 2)
        lines = _per_row(st, lines).expand(hinges.shape[0], -1, -1)
        cross = torch.cat([lines, hinges], 2)
    else:
        cross = lines
    w = _spd_solve(fx.g, cross.transpose(1, 2).contiguous())  # (., P, n)
    r = _rhs(st, c) - cross @ fx.beta  # (rows, n, F)
    return cross, w, r


def _interval_system(st: _Stats, fx: _Fixed, j: Tensor) -> tuple[Tensor, ...]:
    """Residualised 2 x 2 Gram (uu, uv, vv: (., n)), raw norms (., n) and products (rows, n, F)
    of the hinge u_j and step v_j of the sample intervals j (1 or B, n)."""
    n = j.shape[1]
    cross, w, r = _residualise(st, fx, _intervals(j))  # hinges then steps
    wt = w.transpose(1, 2)
    cu, cv, wu, wv = cross[:, :n], cross[:, n:], wt[:, :n], wt[:, n:]
    # the raw norms <u,u>, <u,v>, <v,v> over the n samples x >= j + 1 (what _inner gives)
    vv0 = st.x.shape[0] - (_per_row(st, j) + 1).to(_DT)
    uv0 = vv0 * (vv0 - 1) / 2
    uu0 = uv0 * (2 * vv0 - 1) / 3
    uu = uu0 - (cu * wu).sum(-1)
    uv = uv0 - (cu * wv).sum(-1)
    vv = vv0 - (cv * wv).sum(-1)
    return uu, uv, vv, uu0, uv0, vv0, r[:, :n], r[:, n:]


def _gains(num: Tensor, den: Tensor, raw: Tensor) -> Tensor:
    """Explained sums of squares num / den of candidate columns, -1 where the column's
    residualised norm den is noise against its raw norm."""
    ok = den > _NOISE * raw
    return torch.where(ok, num / torch.where(ok, den, 1.0), -1.0)


def _single_move(
    st: _Stats, fixed_knots: Tensor, integer_only: bool, intervals: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Best real position of one more knot given the fixed ones (rows, J) (exact, see the module
    doc), in the given sample intervals (1 or B windows, n) or anywhere: knot (rows,) and the
    SSR it gives (rows,)."""
    B = st.rows
    fx = _fixed(st, fixed_knots)
    j_all = _all_intervals(st) if intervals is None else intervals
    uu, uv, vv, uu0, uv0, vv0, ru, rv = _interval_system(st, fx, j_all)
    j_all = _per_row(st, j_all)
    q0, q1, q2 = (ru * ru).sum(-1), 2 * (ru * rv).sum(-1), (rv * rv).sum(-1)  # (B, n)
    d0, d1, d2 = uu, 2 * uv, vv
    ends = q0.new_tensor([0.0, 1.0]).expand(*q0.shape, 2)  # s = 0, 1
    # explained SS num/den and raw norm at s = 0 and 1: the polynomials below there, bit for bit
    gain = _gains(
        torch.stack([q0, q0 + (q1 + q2)], -1),
        torch.stack([d0, d0 + (d1 + d2)], -1),
        torch.stack([uu0, uu0 + (2 * uv0 + vv0)], -1),
    )
    s = ends
    if not integer_only:  # d/ds [Q(s) / D(s)] = 0  <=>  qa s^2 + qb s + qc = 0 (cubics cancel)
        qa, qb, qc = q2 * d1 - q1 * d2, 2 * (q2 * d0 - q0 * d2), q1 * d0 - q0 * d1
        sq = torch.sqrt((qb * qb - 4 * qa * qc).clamp_min(0))
        h = -0.5 * (qb + torch.where(qb >= 0, sq, -sq))
        r1 = h / torch.where(qa == 0, 1.0, qa)
        r2 = qc / torch.where(h == 0, 1.0, h)
        roots = torch.stack([r1, r2], -1).nan_to_num(0.0, 0.0, 0.0).clamp(0.0, 1.0)
        num = q0[..., None] + (q1[..., None] + q2[..., None] * roots) * roots
        den = d0[..., None] + (d1[..., None] + d2[..., None] * roots) * roots
        raw = uu0[..., None] + (2 * uv0[..., None] + vv0[..., None] * roots) * roots
        gain = torch.cat([gain, _gains(num, den, raw)], -1)  # (B, n, 4)
        s = torch.cat([ends, roots], -1)
    flat = gain.reshape(B, -1)
    best = flat.argmax(1)
    col = torch.div(best, s.shape[-1], rounding_mode="floor")
    j = j_all.expand(B, -1).gather(1, col[:, None])[:, 0]
    t = (j + 1).to(_DT) - s.reshape(B, -1).gather(1, best[:, None])[:, 0]
    return t, fx.ssr - flat.gather(1, best[:, None])[:, 0]


def _without(knots: Tensor, drop: Sequence[int]) -> Tensor:
    return knots[:, [i for i in range(knots.shape[1]) if i not in drop]]


def _hinges(t: Tensor) -> _Cols:
    """Hinge columns (x - t)+ for knots t of any shape."""
    return _Cols(torch.ones_like(t), -t, torch.floor(t).long() + 1)


def _pair_elements(st: _Stats) -> int:
    return _PAIR_ELEMENTS["cuda" if st.y.is_cuda else "cpu"]


def _slice(t: Tensor, rows: slice) -> Tensor:
    """Rows of a per-window tensor, or the tensor itself when windows share it (leading dim 1)."""
    return t if t.shape[0] == 1 else t[rows]


@dataclass(frozen=True)
class _PairSystem:
    """The residualised 2 x 2 systems of every pair (a, b) of some windows (or of all, shared):
    ``ok`` (., na, nb) where the pair is solvable, and the factors of the explained SS:
    ``gb / det``, ``ga / det`` and ``2 g / det`` (0 where not ok)."""

    ok: Tensor
    gb_det: Tensor
    ga_det: Tensor
    g2_det: Tensor


def _pair_system(cols: tuple[Tensor, ...], ta: Tensor, tb: Tensor, rows: slice) -> _PairSystem:
    """:class:`_PairSystem` of windows ``rows`` from the raw and residualised Gram entries
    ``cols`` = (graw, ca, wb, g_a, g_b, raw_a, raw_b) of :func:`_best_pair`."""
    graw, ca, wb, g_a, g_b, raw_a, raw_b = (_slice(t, rows) for t in cols)
    g = graw - ca @ wb  # residualised Gram
    det = g_a[:, :, None] * g_b[:, None, :] - g * g
    ok = (g_a > _NOISE * raw_a)[:, :, None] & (g_b > _NOISE * raw_b)[:, None, :]
    ok &= det > _COLLINEAR * g_a[:, :, None] * g_b[:, None, :]
    ok &= _slice(ta, rows)[:, :, None] < _slice(tb, rows)[:, None, :]
    inv_det = torch.where(ok, 1 / torch.where(ok, det, 1.0), 0.0)
    return _PairSystem(ok, g_b[:, None, :] * inv_det, g_a[:, :, None] * inv_det, 2 * g * inv_det)


def _best_pair(st: _Stats, fx: _Fixed, ta: Tensor, tb: Tensor | None) -> tuple[Tensor, Tensor]:
    """Best two knots ta[i] < tb[j] to add to the fixed basis: knots (B, 2), explained SS (B,).

    ``ta`` (1 or B, na), ``tb`` (1 or B, nb) or None for ``tb = ta``. Exact 2 x 2 least squares on
    the residualised hinges, for every pair: [r_a r_b] [[g_aa g_ab] [g_ab g_bb]]^{-1} [r_a r_b]^T,
    summed over features. The (windows, na, nb) gains are built a few windows at a time in one
    reused buffer (memory O(_pair_elements), not O(B na nb): fresh arrays per chunk left the
    allocator's heap fragmented, over 1 GB for 256 windows of 1,000 samples); the systems are
    solved once when every window shares them (no fixed knots), else chunk by chunk.
    """
    tb_ = ta if tb is None else tb
    ha, hb = _hinges(ta), _hinges(tb_)
    ca, wa, ra = _residualise(st, fx, ha)
    cb, wb, rb = (ca, wa, ra) if tb is None else _residualise(st, fx, hb)
    raw_a, raw_b = _inner(st, ha, ha), _inner(st, hb, hb)  # (., n)
    g_a = raw_a - (ca * wa.transpose(1, 2)).sum(-1)
    g_b = raw_b - (cb * wb.transpose(1, 2)).sum(-1)
    graw = _inner(st, ha[:, :, None], hb[:, None, :])  # (., na, nb)
    cols = (graw, ca, wb, g_a, g_b, raw_a, raw_b)
    B, na, nb = ra.shape[0], ta.shape[1], tb_.shape[1]
    step = max(1, min(B, _pair_elements(st) // (na * nb)))
    shared = all(t.shape[0] == 1 for t in (*cols, ta, tb_))
    system = _pair_system(cols, ta, tb_, slice(0, 1)) if shared else None
    buf, tmp = ra.new_empty(step, na, nb), ra.new_empty(step, na, nb)
    knots, gains = [], []
    for lo in range(0, B, step):
        rows = slice(lo, lo + step)
        sy = system or _pair_system(cols, ta, tb_, rows)
        ra_, rb_ = ra[rows], rb[rows]  # (b, n, F)
        gain, cross = buf[: ra_.shape[0]], tmp[: ra_.shape[0]]
        torch.mul((ra_ * ra_).sum(-1)[:, :, None], sy.gb_det, out=gain)
        torch.mul((rb_ * rb_).sum(-1)[:, None, :], sy.ga_det, out=cross)
        gain += cross
        # <r_a, r_b>; with one feature an outer product, faster than a matrix product
        if ra_.shape[2] == 1:
            torch.mul(ra_, rb_.transpose(1, 2), out=cross)
        else:
            torch.matmul(ra_, rb_.transpose(1, 2), out=cross)
        gain -= cross.mul_(sy.g2_det)
        flat = gain.masked_fill_(~sy.ok, -1.0).view(gain.shape[0], -1)
        best = flat.argmax(1)
        i = torch.div(best, nb, rounding_mode="floor")
        a = _slice(ta, rows).expand(len(best), na).gather(1, i[:, None])
        b = _slice(tb_, rows).expand(len(best), nb).gather(1, (best - i * nb)[:, None])
        knots.append(torch.cat([a, b], 1))
        gains.append(flat.gather(1, best[:, None])[:, 0])
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
    gain_j = torch.where(ok_j, num_j / torch.where(ok_j, det_j, 1.0), -1.0)
    best_j = gain_j.argmax(1)
    gain_jump = gain_j.gather(1, best_j[:, None])[:, 0]
    knots_jump = best_j.to(_DT)[:, None] + torch.tensor([0.25, 0.75], dtype=_DT, device=grid.device)
    return torch.where((gain_jump > gain_pair)[:, None], knots_jump, knots_pair)


def _repeat(st: _Stats, n: int) -> _Stats:
    """Each window as ``n`` rows in a row (window-major), its suffix sums not copied."""
    return _Stats(st.y, st.x, st.sy0, st.sy1, st.yy.repeat_interleave(n, 0), n)


def _local_pair_move(st: _Stats, knots: Tensor, on_grid: int, exact: int) -> Tensor:
    """(B, J) knots with two of them re-placed jointly, nearby, the others fixed: knot ``on_grid``
    on a 1/_LOCAL_SUB-sample grid within _LOCAL_RADIUS samples, knot ``exact`` at its exact best
    real position (single move) within _LOCAL_RADIUS sample intervals, for each of those. Runs a
    few windows at a time (its per-row arrays are (windows * 33, 10 columns, J + 1))."""
    B, J = knots.shape
    na, n_cols = 2 * _LOCAL_RADIUS * _LOCAL_SUB + 1, 2 * (2 * _LOCAL_RADIUS + 1)
    step = max(1, _pair_elements(st) // (na * n_cols * (J + 1)))
    if step >= B:
        return _local_pair_chunk(st, knots, on_grid, exact)
    parts = []
    for lo in range(0, B, step):
        rows = slice(lo, lo + step)
        part = _Stats(st.y[rows], st.x, st.sy0[rows], st.sy1[rows], st.yy[rows])
        parts.append(_local_pair_chunk(part, knots[rows], on_grid, exact))
    return torch.cat(parts)


def _local_pair_chunk(st: _Stats, knots: Tensor, on_grid: int, exact: int) -> Tensor:
    """:func:`_local_pair_move` on the windows of ``st`` at once."""
    B, L = knots.shape[0], st.x.shape[0]
    r, sub = _LOCAL_RADIUS, _LOCAL_SUB
    offsets = torch.arange(-r * sub, r * sub + 1, device=knots.device).to(_DT) / sub
    ta = (knots[:, on_grid : on_grid + 1] + offsets).clamp(0.0, L - 1.0)  # (B, na)
    na = ta.shape[1]
    others = _without(knots, (on_grid, exact)).repeat_interleave(na, 0)
    fixed = torch.cat([others, ta.reshape(-1, 1)], 1)  # (B na, J - 1)
    window = torch.arange(-r, r + 1, device=knots.device)
    near = (torch.floor(knots[:, exact : exact + 1]).long() + window).clamp(0, L - 2)  # (B, 5)
    tb, ssr = _single_move(_repeat(st, na), fixed, False, near)
    pick = torch.arange(B, device=knots.device) * na + ssr.reshape(B, na).argmin(1)
    out = knots.clone()
    out[:, on_grid], out[:, exact] = ta.reshape(-1)[pick], tb[pick]
    return out
