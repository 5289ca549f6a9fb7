"""Distances between cycles (Euclidean, banded DTW, SBD) and the NearestCycles references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.detectors.nearest.cycles import NearestCycles, cycle_points, robust_location_scale
from model.detectors.nearest.distances import (
    band_width,
    dtw,
    euclidean,
    lb_keogh,
    nearest_dtw,
    resample,
    sbd,
)
from model.errors import DataError


def _naive_dtw(a: np.ndarray, b: np.ndarray, w: int) -> float:
    p = len(a)
    d = np.full((p + 1, p + 1), np.inf)
    d[0, 0] = 0.0
    for i in range(1, p + 1):
        for j in range(max(1, i - w), min(p, i + w) + 1):
            cost = float(((a[i - 1] - b[j - 1]) ** 2).sum())
            d[i, j] = cost + min(d[i - 1, j], d[i - 1, j - 1], d[i, j - 1])
    return float(np.sqrt(d[p, p]))


def _cycles(n: int, p: int, f: int, seed: int) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(n, p, f)))


@pytest.mark.parametrize("band", [0.05, 0.1, 0.3])
def test_dtw_equals_the_textbook_recurrence(band: float) -> None:
    q, r = _cycles(4, 25, 2, 0), _cycles(5, 25, 2, 1)
    w = band_width(25, band)
    expected = np.array([[_naive_dtw(a, b, w) for b in r.numpy()] for a in q.numpy()])
    np.testing.assert_allclose(dtw(q, r, band).numpy(), expected, rtol=1e-10)


def test_dtw_bounds_and_identity() -> None:
    q, r = _cycles(6, 30, 1, 2), _cycles(7, 30, 1, 3)
    d = dtw(q, r)
    assert torch.all(lb_keogh(q, r) <= d + 1e-9)  # a lower bound
    assert torch.all(d <= euclidean(q, r) + 1e-9)  # the diagonal path is in the band
    assert torch.all(dtw(q, q).diagonal() == 0)


def test_nearest_dtw_is_exact_with_every_candidate_and_leaves_itself_out() -> None:
    q, r = _cycles(5, 20, 1, 4), _cycles(9, 20, 1, 5)
    full = dtw(q, r)
    got = nearest_dtw(q, r, candidates=9)
    np.testing.assert_allclose(got.numpy(), full.amin(1).numpy())
    loo = dtw(r, r)
    loo.fill_diagonal_(torch.inf)
    np.testing.assert_allclose(
        nearest_dtw(r, r, candidates=8, exclude_self=True).numpy(), loo.amin(1).numpy()
    )


def test_dtw_tolerates_a_phase_shift_that_euclid_does_not() -> None:
    t = np.linspace(0, 2 * np.pi, 64)
    base = np.sin(t)[None, :, None]
    shifted = np.sin(t - 0.3)[None, :, None]
    q, r = torch.as_tensor(shifted), torch.as_tensor(base)
    assert float(dtw(q, r)) < 0.5 * float(euclidean(q, r))


def test_sbd_ignores_level_scale_and_shift() -> None:
    t = np.linspace(0, 4 * np.pi, 80)
    base = np.sin(t)
    moved = 3.0 * np.roll(base, 5) + 10.0
    d = sbd(torch.as_tensor(moved[None, :, None]), torch.as_tensor(base[None, :, None]))
    assert float(d) < 0.1
    other = np.sign(np.sin(3 * t))
    d_other = sbd(torch.as_tensor(other[None, :, None]), torch.as_tensor(base[None, :, None]))
    assert float(d_other) > float(d) + 0.2


def test_resample_keeps_ends_and_equal_lengths() -> None:
    w = np.arange(10.0)[:, None]
    out = resample([w, np.arange(7.0)[:, None]], 10)
    assert out.shape == (2, 10, 1)
    np.testing.assert_array_equal(out[0], w)
    assert out[1, 0, 0] == 0.0 and out[1, -1, 0] == 6.0


def test_nearest_cycles_cross_fits_its_reference_distances() -> None:
    rng = np.random.default_rng(0)
    wins = [np.sin(np.linspace(0, 6, int(n)))[:, None] + 0.1 * rng.normal(size=(int(n), 1))
            for n in rng.integers(40, 60, size=20)]  # fmt: skip
    nc = NearestCycles(1, ["euclidean", "dtw", "sbd"], cycle_points(wins, 128), candidates=20)
    ref = nc.fit(wins, max_references=20, seed=0)
    assert ref.shape == (20, 3) and np.all(ref > 0)  # nobody is its own neighbour
    brute = euclidean(nc.cycles, nc.cycles)
    brute.fill_diagonal_(torch.inf)
    np.testing.assert_allclose(ref[:, 0], brute.amin(1).numpy(), rtol=1e-6)
    loc, scale = robust_location_scale(ref)
    np.testing.assert_allclose(nc.loc.numpy(), loc)
    np.testing.assert_allclose(nc.scale.numpy(), scale)
    # a kept window scored as new is at distance 0 from itself
    assert np.allclose(nc.distances(wins[:2])[:, 0], 0.0, atol=1e-5)


def test_nearest_cycles_keeps_a_seeded_sample_and_refuses_bad_input() -> None:
    rng = np.random.default_rng(1)
    wins = [rng.normal(size=(30, 2)) for _ in range(12)]
    a = NearestCycles(2, ["euclidean"], 30)
    b = NearestCycles(2, ["euclidean"], 30)
    ra, rb = a.fit(wins, 5, seed=3), b.fit(wins, 5, seed=3)
    assert a.cycles.shape == (5, 30, 2)
    np.testing.assert_array_equal(ra, rb)
    with pytest.raises(DataError, match="metrics"):
        NearestCycles(1, ["cosine"], 10)
    with pytest.raises(DataError, match="at least 2"):
        NearestCycles(1, ["euclidean"], 10).fit([wins[0]], 5, seed=0)
