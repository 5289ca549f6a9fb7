"""The ``fiducial`` cutter on synthetic series: true cycles found, missed peaks flagged."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from model.cycles import FiducialCutter, cut, fit_fiducial
from model.cycles.fiducial_fit import period_candidates
from model.errors import DataError
from model.evaluation.synthetic import SyntheticConfig, generate

# +-15 % uniform jitter and a +-10 % slow swing of the period (phase drift)
_CFG = SyntheticConfig(
    n_series=2,
    n_cycles=300,
    period=128,
    period_jitter=0.15,
    jitter_law="uniform",
    period_drift=0.1,
    anomaly_rate=0.0,
    seed=4,
)


def _true_peaks(cfg: SyntheticConfig, index: int) -> np.ndarray:
    """The sharp peak of each cycle of series ``index``: the noise-free maximum of the cycle
    (the same draws without noise; every cycle holds its whole peak)."""
    clean = generate(replace(cfg, noise=0.0))[index]
    bounds = [*clean.cycle_starts.tolist(), len(clean.values)]
    peaks = np.array(
        [a + int(np.argmax(clean.values[a:b, 0])) for a, b in itertools.pairwise(bounds)]
    )
    assert np.diff(peaks).min() > 0.5 * cfg.period  # no cycle's peak wrapped to its edge
    return peaks


def _fiducials(cutter: FiducialCutter, cycles: list) -> np.ndarray:  # type: ignore[type-arg]
    """The fiducial points the cycles were cut at: each aligned cycle's start, and each end
    not forced by a missing point, ``lead`` samples earlier than the point."""
    starts = [c.start for c in cycles if "cycle_unaligned" not in c.quality]
    ends = [c.end for c in cycles if "cycle_too_long" not in c.quality]
    return np.array(sorted(set(starts) | set(ends))) + cutter.lead_samples


def test_fitted_on_one_series_it_finds_the_true_cycles_of_another() -> None:
    train, test = generate(_CFG)
    cutter = fit_fiducial([train.values])
    assert cutter.polarity == 1 and abs(cutter.period - 128) < 0.05 * 128
    cycles = cut(cutter, test.values)
    found = _fiducials(cutter, cycles)
    truth = _true_peaks(_CFG, 1)
    truth = truth[truth <= found[-1] + 0.02 * _CFG.period]  # up to the last cycle returned
    assert len(truth) > 290
    # each true peak matched to the nearest fiducial point: within 2 % of the period, and one
    # point per peak (no point serves two peaks, no point left over)
    nearest = np.abs(found[None, :] - truth[:, None]).argmin(axis=1)
    close = np.abs(found[nearest] - truth) <= 0.02 * _CFG.period
    assert close.mean() >= 0.99
    assert len(set(nearest[close].tolist())) == close.sum()
    assert len(found) <= len(truth) + 0.01 * len(truth)
    lengths = np.array([len(c) for c in cycles[1:]])
    assert lengths.min() >= cutter.min_length and lengths.max() <= cutter.max_length
    assert all(c.quality == () for c in cycles[1:])


_STEADY = SyntheticConfig(n_series=2, n_cycles=80, period=100, period_jitter=0.05, anomaly_rate=0)


def _steady() -> tuple[FiducialCutter, np.ndarray, np.ndarray]:
    """A cutter fitted on one steady series; another series (a copy to edit), its true peaks."""
    train, test = generate(_STEADY)
    return fit_fiducial([train.values]), test.values.copy(), _true_peaks(_STEADY, 1)


def test_a_missing_peak_gives_a_flagged_long_cycle_not_two_merged() -> None:
    cutter, x, peaks = _steady()
    x[peaks[40] - 8 : peaks[40] + 9] = x[peaks[40] - 9]  # flatten cycle 40's peak
    cycles = cut(cutter, x)
    lead = cutter.lead_samples
    flagged = [(i, c) for i, c in enumerate(cycles) if c.quality][1:]  # after the first
    (i, long), (j, rest) = flagged
    assert long.quality == ("cycle_too_long",) and len(long) == cutter.max_length
    assert abs(long.start - (peaks[39] - lead)) <= 2  # from the last peak seen
    assert j == i + 1 and "cycle_unaligned" in rest.quality  # then on to the next peak
    assert abs(rest.end - (peaks[41] - lead)) <= 2
    assert all(c.quality == () and len(c) < 1.3 * _STEADY.period for c in cycles[1:i])


def test_a_spurious_peak_gives_a_flagged_short_cycle() -> None:
    cutter, x, peaks = _steady()
    x[peaks[20] + 45] += 2.0  # a spike 0.45 periods after a peak: past the refractory period
    flagged = [c for c in cut(cutter, x) if c.quality][1:]
    assert [c.quality for c in flagged] == [("cycle_too_short",)]
    assert abs(flagged[0].start - (peaks[20] - cutter.lead_samples)) <= 2


def test_troughs_are_chosen_for_an_inverted_signal_and_the_period_is_its_own() -> None:
    (s,) = generate(SyntheticConfig(n_series=1, n_cycles=100, period=72, anomaly_rate=0.0))
    cutter = fit_fiducial([-s.values])
    assert cutter.polarity == -1 and abs(cutter.period - 72) < 2
    t = np.arange(4000)
    assert abs(fit_fiducial([np.sin(2 * np.pi * t / 290.0)]).period - 290.0) < 0.5  # ECG-like P
    with pytest.raises(DataError, match="constant"):
        period_candidates([np.zeros(100)])
    with pytest.raises(DataError, match="no periodicity"):
        period_candidates([np.arange(100.0)])
