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

A window's rounds stop after the first round in which no pair, local pair or single move lowers
its SSR by more than 1e-9 |y|^2, and its Newton iterations when its step or trust radius is
negligible; windows that stop leave the batch and the others go on without them. Every move
depends on the window alone, so a window gets the knots it gets alone, whatever its batch (bit
for bit on the CPU at K <= 3; at K >= 4 torch's matrix products may differ in the last bit
between batch sizes, which the search can carry into the knots). A move is kept only where the
SSR of its fitted coefficients is lower, so the search never gets worse; the SSR returned is
summed from the residuals of the final fit. Constant and linear windows keep evenly spaced knots
(SSR 0); L <= 2 gives evenly spaced knots and SSR 0. Same input and device -> same knots.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model.errors import DataError
from model.segmentation.base import Segmentation, as_window, knots_to_cuts
from model.segmentation.pwl_moves import (
    _DT,
    Tensor,
    _Cols,
    _fit,
    _fit_inverse,
    _local_pair_move,
    _pair_elements,
    _pair_move,
    _residual_ssr,
    _single_move,
    _spd_solve,
    _Stats,
    _stats,
    _without,
)

_ACCEPT = 1e-12  # a move must lower the SSR by this fraction of sum(y^2) to be accepted
_PAIR_GRID = 100  # K >= 4: pair moves over at most ~this many positions per knot
_ANOTHER_ROUND = 1e-9  # search on while some move lowered the SSR by this fraction of sum(y^2)


# ------------------------------------------------------------------ search
def _accept(
    st: _Stats, knots: Tensor, ssr: Tensor, proposal: Tensor, tol: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Take ``proposal`` (sorted) where its SSR is lower by > tol * sum(y^2); the flag (B,) says
    where it lowered the SSR by more than _ANOTHER_ROUND * sum(y^2)."""
    proposal = proposal.sort(1).values
    new = _fit(st, proposal)[0]
    better = new < ssr - tol * st.yy
    much = new < ssr - _ANOTHER_ROUND * st.yy
    return torch.where(better[:, None], proposal, knots), torch.where(better, new, ssr), much


def _tails(st: _Stats, beta: Tensor, c: _Cols, m: Tensor) -> tuple[Tensor, Tensor]:
    """Inner products (B, n, P) of the steps [x >= m_k] (m: (B, n)) with the basis c, and sums
    (B, n, F) over x >= m_k of the residuals of the fit with coefficients beta (B, P, F) on c."""
    # <[x >= m_k], c_p>: pwl_moves._inner of a step (a = 0, b = 1) with its zero terms dropped
    mf = torch.maximum(m[:, :, None], c.m[:, None, :]).to(_DT)
    n = st.x.shape[0] - mf  # samples in the common support
    a = c.a[:, None, :]
    tail_cols = a * (n * (n - 1) / 2) + (a * mf + c.b[:, None, :]) * n  # (B, n, P)
    tail_y = st.sy0.gather(1, m[:, :, None].expand(-1, -1, st.y.shape[2]))  # (B, n, F)
    return tail_cols, tail_y - tail_cols @ beta


def _hessian(w: Tensor, beta: Tensor, m: Tensor, tails: tuple[Tensor, Tensor], L: int) -> Tensor:
    """(B, J, J) d^2 SSR / dt_k dt_l inside the sample intervals [m_k - 1, m_k], analytic.

    With X the basis, G = X'X, W = G^-1 (B, P, P), s_k = [x >= m_k], T_k = X's_k, R_k = s_k'r
    (``tails``) and b_k the coefficient of hinge k (per feature; summed over features):
    d X / dt_l = -s_l e_l', d beta / dt_l = W (T_l b_l - e_l R_l), and differentiating
    dSSR/dt_k = 2 b_k R_k gives
    H_kl = 2 [C_lk b_l R_k + C_kl b_k R_l - W_kl R_k R_l + (s_k's_l - T_k' W T_l) b_k b_l],
    C = T W restricted to the hinge columns."""
    tail_cols, r_tail = tails  # (B, J, P), (B, J, F)
    cw = tail_cols @ w  # (B, J, P)
    b = beta[:, 2:]  # (B, J, F)
    x = cw[:, :, 2:] * (b @ r_tail.transpose(1, 2))
    both = (L - torch.maximum(m[:, :, None], m[:, None, :])).to(_DT)  # s_k's_l
    coupled = both - cw @ tail_cols.transpose(1, 2)
    hess = x + x.transpose(1, 2) - w[:, 2:, 2:] * (r_tail @ r_tail.transpose(1, 2))
    return 2 * (hess + coupled * (b @ b.transpose(1, 2)))


def _newton_step(
    st: _Stats, knots: Tensor, fit: tuple[Tensor, _Cols, Tensor], radius: Tensor
) -> tuple[Tensor, Tensor]:
    """(B, J) Newton proposal from knots whose fit has coefficients, basis and inverse Gram
    ``fit``, each knot kept in one sample interval, steps clipped to +-radius (B, 1), and the
    largest step (B, 1) before that clip; see :func:`_newton`."""
    beta, c, w = fit
    B, J = knots.shape
    L = st.x.shape[0]
    lo = torch.floor(knots)
    tail_cols, r_tail = _tails(st, beta, c, torch.cat([lo + 1, lo], 1).long().clamp(0, L))
    grad = 2 * (r_tail.view(B, 2, J, -1) * beta[:, None, 2:]).sum(-1)  # (B, right/left, J)
    g_right, g_left = grad.unbind(1)
    on_grid = knots == lo
    go_left = on_grid & (g_right >= 0) & (g_left > 0)
    frozen = on_grid & (g_right >= 0) & (g_left <= 0)
    box = torch.where(go_left, lo - 1, lo).clamp(0, L - 2)  # (B, J) interval [box, box + 1]
    g0 = torch.where(go_left, g_left, g_right)
    # the tails at box + 1 (a knot at L - 1 that does not go left, where box + 1 = L - 1 is not
    # its right end L, has g_right = 0 and is frozen: its Hessian entries are not used)
    left = go_left[:, :, None]
    tails = (
        torch.where(left, tail_cols[:, J:], tail_cols[:, :J]),
        torch.where(left, r_tail[:, J:], r_tail[:, :J]),
    )
    hess = _hessian(w, beta, (box + 1).long(), tails, L)
    keep = (~frozen).to(_DT)
    hess = 0.5 * (hess + hess.transpose(1, 2)) * keep[:, :, None] * keep[:, None, :]
    hess = hess + torch.diag_embed(1 - keep)
    g0 = g0 * keep
    delta = -_spd_solve(hess, g0[:, :, None])[:, :, 0]
    descent = (delta * g0).sum(1, keepdim=True) < 0
    diag = torch.diagonal(hess, dim1=1, dim2=2).abs().clamp_min(1e-12)
    delta = torch.where(descent, delta, -g0 / diag)
    reach = delta.abs().amax(1, keepdim=True)
    delta = torch.maximum(torch.minimum(delta, radius), -radius)
    return torch.minimum(torch.maximum(knots + delta, box), box + 1), reach


def _repeats(
    radius: Tensor, reach: Tensor, used: Tensor, done: Tensor, rejected: Tensor, iters: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Newton iterations known without running them: at unchanged knots the next proposal is
    the rejected one again as long as the shrunk radius (B, 1) does not clip its largest step
    ``reach``, so it is rejected again: the radius shrinks and one iteration is used each time,
    until the radius clips the step, drops below 1e-6 (done) or the iterations run out."""
    again = rejected & ~done & (reach <= radius) & (used < iters)
    while bool(again.any()):
        radius = torch.where(again, 0.1 * radius, radius)
        used = used + again.long()
        done = done | (again & (radius < 1e-6))
        again = again & ~done & (reach <= radius) & (used < iters)
    return radius, used, done


def _newton(st: _Stats, knots: Tensor, ssr: Tensor, iters: int) -> tuple[Tensor, Tensor]:
    """Projected Newton on all knots jointly, each knot kept in one sample interval per step.

    Inside an interval the SSR is smooth; at an integer knot the interval is chosen by the
    one-sided derivatives (a knot whose both sides go up sits at a kink minimum and is frozen).
    Gradient and Hessian: analytic, inside the intervals. Steps are kept only where they lower
    the SSR; a per-window trust radius shrinks otherwise (repeated rejections of the same step
    are counted, not run: :func:`_repeats`). A window stops after ``iters`` iterations or when
    its step or radius is negligible, and leaves the batch: its iterations are those it gets
    alone."""
    full, out_knots, out_ssr = st, knots.clone(), ssr.clone()
    rows = torch.arange(knots.shape[0], device=knots.device)
    _, beta, c, w = _fit_inverse(st, knots)
    radius = torch.ones(knots.shape[0], 1, dtype=_DT, device=knots.device)
    used = torch.zeros(knots.shape[0], 1, dtype=torch.long, device=knots.device)
    while True:
        proposal, reach = _newton_step(st, knots, (beta, c, w), radius)
        ordered = proposal.sort(1).values
        new, new_beta, new_c, new_w = _fit_inverse(st, ordered)
        better = new < ssr  # a step that changes no knot changes no SSR: moved = better
        b1, b3 = better[:, None], better[:, None, None]
        done = (proposal - knots).abs().amax(1, keepdim=True) < 1e-8
        knots, ssr = torch.where(b1, ordered, knots), torch.where(better, new, ssr)
        beta, w = torch.where(b3, new_beta, beta), torch.where(b3, new_w, w)
        c = _Cols(
            *(torch.where(b1, n, o) for n, o in ((new_c.a, c.a), (new_c.b, c.b), (new_c.m, c.m)))
        )
        radius = torch.where(b1, radius, 0.1 * radius)
        used = used + 1
        done |= radius < 1e-6
        radius, used, done = _repeats(radius, reach, used, done, ~b1, iters)
        go = ~(done | (used >= iters))[:, 0]
        out_knots[rows], out_ssr[rows] = knots, ssr
        if not bool(go.any()):
            break
        if not bool(go.all()):  # the windows still moving go on alone
            rows, knots, ssr, beta, w = (v[go] for v in (rows, knots, ssr, beta, w))
            radius, used, c, st = radius[go], used[go], c[go], full.select(rows)
    return out_knots, out_ssr


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


def _round(
    st: _Stats, knots: Tensor, ssr: Tensor, refine: bool, stride: int
) -> tuple[Tensor, Tensor, Tensor]:
    """One round of pair, Newton, local pair and single moves; the flag (B,) says which windows
    some pair, local pair or single move improved by more than _ANOTHER_ROUND * sum(y^2)."""
    J = knots.shape[1]
    pairs = [(i, j) for i in range(J) for j in range(i + 1, J)] if J >= 3 else []
    much = torch.zeros(knots.shape[0], dtype=torch.bool, device=knots.device)
    for pair in pairs:  # any two knots, re-placed jointly anywhere (integer grid, jumps)
        keep = _without(knots, pair)
        proposal = torch.cat([keep, _pair_move(st, keep, stride)], 1)
        knots, ssr, ok = _accept(st, knots, ssr, proposal, _ACCEPT)
        much |= ok
    if refine:
        knots, ssr = _newton(st, knots, ssr, iters=8)
        for k in range(J - 1):  # neighbouring pairs, jointly, finely, nearby
            proposal = _local_pair_move(st, knots, k, k + 1)
            knots, ssr, ok = _accept(st, knots, ssr, proposal, _ACCEPT)
            much |= ok
    for k in range(J):  # each knot to its best real position anywhere, the others fixed
        keep = _without(knots, (k,))
        proposal = torch.cat([keep, _single_move(st, keep, not refine)[0][:, None]], 1)
        knots, ssr, ok = _accept(st, knots, ssr, proposal, _ACCEPT)
        much |= ok
    return knots, ssr, much


def _local_search(
    st: _Stats, knots: Tensor, ssr: Tensor, refine: bool, max_rounds: int
) -> tuple[Tensor, Tensor]:
    """Rounds of moves (:func:`_round`), each window until a round improves it by little.

    Every move depends on the window alone, so a window that stops leaves the batch and the
    others go on without it: each window gets the rounds (and results) it gets alone."""
    stride = -(-(st.x.shape[0] - 2) // _PAIR_GRID)  # a coarser grid for long windows
    full, out_knots, out_ssr = st, knots.clone(), ssr.clone()
    rows = torch.arange(knots.shape[0], device=knots.device)
    for _ in range(max_rounds):
        knots, ssr, much = _round(st, knots, ssr, refine, stride)
        out_knots[rows], out_ssr[rows] = knots, ssr
        if not bool(much.all()):
            if not bool(much.any()):
                break
            rows, knots, ssr = rows[much], knots[much], ssr[much]
            st = full.select(rows)
    return out_knots, out_ssr


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
