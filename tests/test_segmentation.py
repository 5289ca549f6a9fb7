"""Segmentation: the cut rule, packing, the pwlf reference and the fast batched segmenter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.errors import DataError
from model.segmentation import dp, make_segmenter, pwl_moves
from model.segmentation.base import (
    Segmentation,
    Segmenter,
    knots_to_cuts,
    pack_segments,
)
from model.segmentation.dp import DPSegmenter, fit_pwl, fit_windows
from model.segmentation.pwl_moves import _fit, _fit_inverse, _Stats, _stats
from model.segmentation.pwlf import PwlfSegmenter, continuous_ssr, univariate


def _pwl_window(
    rng: np.random.Generator, length: int, knots: list[float], noise: float
) -> np.ndarray:
    """A continuous piecewise-linear series with random slopes plus Gaussian noise."""
    x = np.arange(length, dtype=np.float64)
    y = rng.normal() + rng.normal() * x / length
    for t in knots:
        y = y + rng.normal(scale=3.0) * np.maximum(x - t, 0.0) / length * 4
    return y + noise * rng.normal(size=length)


def _two_lead_rows(shared: Path, n: int) -> np.ndarray:
    rows = np.loadtxt(shared / "ucr" / "TwoLeadECG" / "TwoLeadECG_TEST.tsv", max_rows=n)
    return rows[:, 1:]


# ------------------------------------------------------------------ cut rule and packing
def test_knots_to_cuts_follows_reference_rule_and_repairs_collisions() -> None:
    cuts = knots_to_cuts(np.array([[10.7, 20.2], [5.2, 5.9], [0.3, 28.9], [28.5, 28.9]]), [30] * 4)
    assert cuts.tolist() == [[0, 10, 20, 29], [0, 5, 6, 29], [0, 1, 28, 29], [0, 27, 28, 29]]
    assert knots_to_cuts(np.zeros((2, 0)), [5, 7]).tolist() == [[0, 4], [0, 6]]
    with pytest.raises(DataError, match="at least 4"):
        knots_to_cuts(np.array([[1.0, 2.0]]), [3])


def test_pack_segments_shapes_masks_and_shared_samples() -> None:
    windows = [np.arange(10.0), np.arange(12.0)[:, None] * np.array([[1.0, -1.0]])]
    with pytest.raises(DataError, match="features"):
        pack_segments(windows, Segmentation(np.array([[0, 3, 9], [0, 5, 11]])))
    windows = [np.arange(10.0), 100 + np.arange(12.0)]
    batch = pack_segments(windows, Segmentation(np.array([[0, 3, 9], [0, 5, 11]])))
    assert batch.values.shape == (4, 7, 1) and batch.n_windows == 2
    assert batch.lengths.tolist() == [4, 7, 6, 7]
    assert batch.window.tolist() == [0, 0, 1, 1]
    assert batch.start.tolist() == [0, 3, 0, 5] and batch.end.tolist() == [3, 9, 5, 11]
    mask = batch.mask()
    assert mask.sum().item() == int(batch.lengths.sum())
    assert torch.all(batch.values[~mask] == 0)
    assert batch.values[0, 3, 0] == batch.values[1, 0, 0] == 3.0  # neighbours share a sample


def test_make_segmenter_names() -> None:
    assert isinstance(make_segmenter("dp", 3), Segmenter)
    assert isinstance(make_segmenter("pwlf", 3, seed=1), PwlfSegmenter)
    assert isinstance(make_segmenter("dp", 4), DPSegmenter)
    with pytest.raises(DataError, match="unknown segmenter"):
        make_segmenter("kmeans", 3)


# ------------------------------------------------------------------ pwlf reference
def test_pwlf_segmenter_is_reproducible_with_a_seed() -> None:
    y = _pwl_window(np.random.default_rng(3), 30, [9.5, 20.2], noise=0.05)
    a, b = PwlfSegmenter(3, seed=7), PwlfSegmenter(3, seed=7)
    np.testing.assert_array_equal(a.knots(y), b.knots(y))
    seg = a.segment([y, y[:25]])
    assert seg.cuts.shape == (2, 4) and seg.cuts[0, -1] == 29 and seg.cuts[1, -1] == 24
    with pytest.raises(DataError, match="at least 4"):
        a.segment([y[:3]])


def test_univariate_projection_and_continuous_ssr() -> None:
    y = np.stack([np.arange(8.0), np.full(8, 2.0)], 1)
    np.testing.assert_allclose(univariate(y), (np.arange(8.0) - 3.5) / np.arange(8.0).std())
    assert continuous_ssr(np.abs(np.arange(-5.0, 6.0)), [5.0]) == pytest.approx(0.0, abs=1e-20)
    assert continuous_ssr(y, []) == pytest.approx(0.0, abs=1e-20)


# ------------------------------------------------------------------ fast segmenter vs pwlf
def _check_against_pwlf(windows: list[np.ndarray], n_segments: int) -> None:
    knots, ssr = DPSegmenter(n_segments).fit(windows)
    ref = PwlfSegmenter(n_segments, seed=0)
    for w, k, s in zip(windows, knots, ssr, strict=True):
        assert s == pytest.approx(continuous_ssr(w, k), rel=1e-9, abs=1e-12)  # a continuous fit
        assert s <= continuous_ssr(w, ref.knots(w)) * 1.02 + 1e-12


def test_dp_is_as_good_as_pwlf_on_random_windows() -> None:
    rng = np.random.default_rng(0)
    windows = [_pwl_window(rng, 45, [12.3, 30.6], 0.1), _pwl_window(rng, 38, [20.0, 21.0], 0.3)]
    windows.append(rng.normal(size=40))
    _check_against_pwlf(windows, 3)


def test_dp_is_as_good_as_pwlf_on_real_windows(shared_data: Path) -> None:
    _check_against_pwlf(list(_two_lead_rows(shared_data, 3)), 3)


def test_k3_is_exact_on_the_integer_grid_and_refinement_only_helps() -> None:
    rng = np.random.default_rng(1)
    for y in (rng.normal(size=14), _pwl_window(rng, 16, [4.4, 9.7], 0.2)):
        length = y.shape[0]
        candidates = [(a, b) for a in range(1, length - 1) for b in range(a + 1, length - 1)]
        candidates += [(j + 0.25, j + 0.75) for j in range(length - 1)]  # jumps
        brute = min(continuous_ssr(y, c) for c in candidates)
        _, on_grid = fit_pwl(torch.as_tensor(y)[None], 3, refine=False)
        _, refined = fit_pwl(torch.as_tensor(y)[None], 3)
        assert on_grid.item() == pytest.approx(brute, rel=1e-9, abs=1e-12)
        assert refined.item() <= on_grid.item() + 1e-12


def test_k2_is_the_global_optimum_over_real_knots() -> None:
    y = np.random.default_rng(2).normal(size=12)
    grid = min(continuous_ssr(y, [t]) for t in np.linspace(0.0, 11.0, 2201))
    _, ssr = fit_pwl(torch.as_tensor(y)[None], 2)
    assert ssr.item() <= grid + 1e-12


def test_dp_larger_k_returns_sorted_valid_knots() -> None:
    y = _pwl_window(np.random.default_rng(4), 60, [8.0, 20.5, 33.0, 47.2], 0.05)
    knots, ssr = fit_pwl(torch.as_tensor(y)[None], 5)
    assert knots.shape == (1, 4) and torch.all(knots[:, 1:] >= knots[:, :-1])
    assert ssr.item() == pytest.approx(continuous_ssr(y, knots[0].numpy()), rel=1e-9)
    assert ssr.item() < 60 * 0.05**2 * 2  # recovers the generating kinks up to the noise


# ------------------------------------------------------------------ batching and edge cases
def test_dp_is_deterministic_and_independent_of_the_batch() -> None:
    rng = np.random.default_rng(5)
    windows = [_pwl_window(rng, 30, [10.0, 19.0], 0.2) for _ in range(4)]
    first, ssr1 = fit_windows(windows, 3)
    second, ssr2 = fit_windows(windows, 3)
    np.testing.assert_array_equal(np.stack(first), np.stack(second))
    np.testing.assert_array_equal(ssr1, ssr2)
    alone, _ = fit_windows(windows[2:3], 3)
    np.testing.assert_allclose(alone[0], first[2], atol=1e-9)


def test_k3_knots_do_not_depend_on_the_batch_mates(shared_data: Path) -> None:
    # windows leave the search when they stop improving (rounds and Newton iterations): each
    # window's knots and SSR are bit for bit those it gets alone or in any sub-batch
    # (before windows left the search, rows 2 and 16 got other knots alone than in this batch)
    y = torch.as_tensor(_two_lead_rows(shared_data, 32))
    knots, ssr = fit_pwl(y, 3)
    for rows in ([2], [0, 16, 21, 30], list(range(10, 32))):
        k, s = fit_pwl(y[rows], 3)
        assert torch.equal(k, knots[rows]) and torch.equal(s, ssr[rows])


@pytest.mark.parametrize("n_segments", [3, 4])
def test_pair_move_chunks_give_the_knots_of_one_pass(
    monkeypatch: pytest.MonkeyPatch, n_segments: int
) -> None:
    # the pair gains are built a few windows at a time in a reused buffer (bounded memory);
    # any budget gives bit for bit the knots of all windows in one chunk: K = 3 solves the
    # shared pair systems once, K = 4 (fixed knots) per chunk
    rng = np.random.default_rng(11)
    y = torch.as_tensor(np.stack([_pwl_window(rng, 40, [9.0, 20.0, 31.0], 0.3) for _ in range(7)]))
    monkeypatch.setitem(pwl_moves._PAIR_ELEMENTS, "cpu", 2**30)  # one chunk
    whole = fit_pwl(y, n_segments)
    for budget in (1, 2 * 38 * 38):  # one window a chunk; two (and a last short chunk)
        monkeypatch.setitem(pwl_moves._PAIR_ELEMENTS, "cpu", budget)
        knots, ssr = fit_pwl(y, n_segments)
        assert torch.equal(knots, whole[0]) and torch.equal(ssr, whole[1])


def _tail_gradient(st: _Stats, knots: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """dSSR/dt_k inside the sample intervals [m_k - 1, m_k] of the fit with ``knots``."""
    _, beta, c = _fit(st, knots)
    return 2 * (beta[:, 2:] * dp._tails(st, beta, c, m)[1]).sum(-1)


def test_newton_hessian_is_the_derivative_of_the_gradient(shared_data: Path) -> None:
    y = np.stack(
        [_two_lead_rows(shared_data, 4), np.random.default_rng(9).normal(size=(4, 82))], -1
    )
    for st in (_stats(torch.as_tensor(y[:, :, :1])), _stats(torch.as_tensor(y))):
        knots = torch.as_tensor(np.sort(np.random.default_rng(3).uniform(5, 75, (4, 2)), 1))
        m = (torch.floor(knots) + 1).long()  # the sample intervals of the knots
        _, beta, c, w = _fit_inverse(st, knots)
        hess = dp._hessian(w, beta, m, dp._tails(st, beta, c, m), 82)
        h = 1e-4 * torch.eye(2, dtype=torch.float64)
        diff = torch.stack(
            [
                (_tail_gradient(st, knots + h[k], m) - _tail_gradient(st, knots - h[k], m)) / 2e-4
                for k in (0, 1)
            ],
            2,
        )
        torch.testing.assert_close(hess, diff, rtol=1e-5, atol=1e-5 * float(diff.abs().max()))


def test_newton_counts_repeated_rejections_exactly(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a rejected step the radius did not clip comes back while the shrunk radius still does not
    # clip it: _repeats counts those iterations; running each of them gives the same knots
    y = torch.as_tensor(_two_lead_rows(shared_data, 24))
    st = _stats(y[:, :, None])
    start = torch.as_tensor(np.sort(np.random.default_rng(0).uniform(3, 78, (24, 2)), 1))
    ssr = _fit(st, start)[0]
    counted = dp._newton(st, start, ssr, 8)
    monkeypatch.setattr(dp, "_repeats", lambda radius, reach, used, done, *_: (radius, used, done))
    run = dp._newton(st, start, ssr, 8)
    assert torch.equal(counted[0], run[0]) and torch.equal(counted[1], run[1])
    assert not torch.equal(counted[0], start)  # Newton did move the knots


def test_variable_lengths_in_one_batch() -> None:
    rng = np.random.default_rng(6)
    windows = [_pwl_window(rng, n, [n / 3, 2 * n / 3], 0.1) for n in (20, 35, 20, 50)]
    knots, ssr = fit_windows(windows, 3)
    for w, k, s in zip(windows, knots, ssr, strict=True):
        k_alone, s_alone = fit_windows([w], 3)
        np.testing.assert_allclose(k, k_alone[0], atol=1e-9)
        assert s == pytest.approx(s_alone[0], rel=1e-12)
    seg = DPSegmenter(3).segment(windows)
    assert [int(c[-1]) for c in seg.cuts] == [19, 34, 19, 49]


def test_multivariate_windows_share_breakpoints() -> None:
    rng = np.random.default_rng(7)
    x = np.arange(40.0)
    hinge = np.maximum(x - 14.5, 0.0), np.maximum(x - 27.25, 0.0)
    w = np.stack(
        [0.3 * x - 0.9 * hinge[0] + 0.8 * hinge[1], -0.2 * x + hinge[0] - 1.1 * hinge[1]], 1
    )
    w = w + 0.01 * rng.normal(size=w.shape)
    (knots,), (ssr,) = fit_windows([w], 3)
    np.testing.assert_allclose(knots, [14.5, 27.25], atol=0.3)
    assert ssr == pytest.approx(continuous_ssr(w, knots), rel=1e-9)
    (swapped,), _ = fit_windows([w[:, ::-1]], 3)
    np.testing.assert_allclose(swapped, knots, atol=1e-9)
    with pytest.raises(DataError, match="features"):
        fit_windows([w, w[:, :1]], 3)


def test_degenerate_windows_give_finite_results() -> None:
    y = np.stack([np.full(20, 3.0), np.linspace(-1.0, 4.0, 20), np.zeros(20)])
    knots, ssr = fit_pwl(torch.as_tensor(y), 3)
    assert torch.all(torch.isfinite(knots)) and torch.all(ssr.abs() < 1e-12)
    for length in (1, 2, 3):
        k, s = fit_pwl(torch.ones(2, length, 2, dtype=torch.float64), 4)
        assert k.shape == (2, 3) and torch.all(torch.isfinite(k)) and torch.all(s == 0)
    seg = DPSegmenter(3).segment([np.full(4, 1.0), np.array([0.0, 5.0, -2.0, 1.0])])
    assert seg.cuts.tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    with pytest.raises(DataError, match="at least 4"):
        DPSegmenter(3).segment([np.ones(3)])
    with pytest.raises(DataError, match="NaN"):
        DPSegmenter(3).segment([np.array([0.0, np.nan, 1.0, 2.0, 3.0])])


def test_dp_segmentation_is_close_to_the_reference_cache(shared_data: Path) -> None:
    path = shared_data / "ucr" / "TwoLeadECG" / "TwoLeadECG_reference_segmentation.npz"
    with np.load(path) as z:
        rows, ref_cuts = z["train_rows"], z["train_cuts"]
    series = np.loadtxt(shared_data / "ucr" / "TwoLeadECG" / "TwoLeadECG_TRAIN.tsv")[rows, 1:]
    cuts = DPSegmenter(3).segment(list(series)).cuts[:, 1:-1]
    assert np.all(np.abs(cuts - ref_cuts) <= 1)  # same optimum, up to where int() falls


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(8)
    windows = [_pwl_window(rng, 50, [15.0, 33.0], 0.2) for _ in range(6)]
    k_cpu, s_cpu = fit_windows(windows, 3)
    k_gpu, s_gpu = fit_windows(windows, 3, device="cuda")
    np.testing.assert_allclose(s_gpu, s_cpu, rtol=1e-9)
    np.testing.assert_allclose(np.stack(k_gpu), np.stack(k_cpu), atol=1e-6)
