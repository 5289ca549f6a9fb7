"""Cycle cutting: every cutter gives the same cycles offline and for any split into pushes."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from model.cycles import (
    FiducialCutter,
    FixedCutter,
    PeriodCutter,
    cut,
    cutter_from_config,
    cycle_windows,
    fit_fiducial,
    make_cutter,
)
from model.errors import DataError
from model.evaluation.synthetic import SyntheticConfig, generate


def _pushed(cutter, t: np.ndarray, x: np.ndarray, sizes: list[int]):  # type: ignore[no-untyped-def]
    """The cycles of pushes of ``sizes`` samples (then the rest), checking ``keep_from``: it
    never goes back, no cycle returned later reaches before it, and after each push the
    samples to keep are at most ``max_length`` (plus a fiducial cutter's ``lag``)."""
    stream, out, i = cutter.stream(), [], 0
    for n in [*sizes, len(t)]:
        kept = stream.keep_from
        cycles = stream.push(t[i : i + n], x[i : i + n])
        assert all(c.start >= kept for c in cycles)
        i += len(t[i : i + n])
        assert kept <= stream.keep_from
        assert i - stream.keep_from <= cutter.max_length + getattr(cutter, "lag", 0)
        out += cycles
    return out


def _splits(rng: np.random.Generator, total: int) -> list[int]:
    """Push sizes mixing single samples, empty pushes and large chunks."""
    sizes: list[int] = []
    while sum(sizes) < total:
        scale = int(rng.choice([1, 7, 300]))
        sizes += [int(n) for n in rng.integers(0, scale + 1, size=20)]
    return sizes


@pytest.mark.parametrize("length,hop", [(5, 5), (5, 2), (4, 7)])
def test_fixed_matches_sliding_windows_for_any_split(length: int, hop: int) -> None:
    x = np.arange(30, dtype=np.float64)[:, None]
    t = np.arange(30, dtype=np.float64)
    cutter = FixedCutter(length, hop)
    cycles = cut(cutter, x, t)
    assert [(c.start, c.end) for c in cycles] == [
        (s, s + length) for s in range(0, 30 - length + 1, hop)
    ]
    rng = np.random.default_rng(0)
    for _ in range(5):
        sizes = list(rng.integers(0, 7, size=8))
        assert _pushed(cutter, t, x, sizes) == cycles
    assert [w[0, 0] for w in cycle_windows(x, cycles)] == [c.start for c in cycles]


def test_config_round_trip_and_errors() -> None:
    cutter = FixedCutter(8, 4)
    assert cutter_from_config(cutter.to_config()) == cutter
    with pytest.raises(DataError, match="unknown cycle cutter"):
        cutter_from_config({"kind": "lunar"})
    with pytest.raises(DataError, match="needs the keys"):
        cutter_from_config({"kind": "fixed", "length": 8})
    with pytest.raises(DataError, match="length >= 2"):
        FixedCutter(1, 1)


def test_model_cutter_defaults_to_fixed_windows() -> None:
    from model.cycles import model_cutter

    assert model_cutter(None, 40, None) == FixedCutter(40, 40)
    assert model_cutter(None, 40, 10) == FixedCutter(40, 10)
    assert model_cutter({"kind": "fixed", "length": 9, "hop": 3}, 40, 10) == FixedCutter(9, 3)


def _series(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps, values) a ``kind`` cutter has work to do on: irregular, gapped samples over
    DST changes for ``period``; a jittered, quantised (plateaus) synthetic signal with a
    missing and a spurious peak for ``fiducial``."""
    if kind == "period":
        steps = rng.choice([60.0, 300.0, 900.0, 3 * 86400.0], p=[0.3, 0.6, 0.09, 0.01], size=4000)
        t = 1616540000.0 + np.cumsum(steps)  # 2021-03-23, over the spring and autumn changes
        return t, rng.standard_normal((t.size, 2))
    (s,) = generate(
        SyntheticConfig(
            n_series=1, n_cycles=60, period=64, period_jitter=0.15, anomaly_rate=0.0, seed=2
        )
    )
    x = np.round(s.values * 8) / 8  # quantised like ADC samples: plateaus at the peaks
    x[s.cycle_starts[20] : s.cycle_starts[21]] = 0.0  # a missing peak
    x[s.cycle_starts[30] + 2] += 3.0  # a spurious one
    return np.arange(len(x), dtype=np.float64), x


_CUTTERS = {
    "period": lambda: PeriodCutter(86400.0, 300.0, tz="Europe/Paris"),
    "period-cap": lambda: PeriodCutter(86400.0, 300.0, tz="+05:30", length_cap=50),
    "fiducial": lambda: fit_fiducial([_series("fiducial", np.random.default_rng(0))[1]]),
}


@pytest.mark.parametrize("name", sorted(_CUTTERS))
def test_cutters_give_the_same_cycles_for_any_split(name: str) -> None:
    rng = np.random.default_rng(1)
    cutter = _CUTTERS[name]()
    t, x = _series(name.split("-")[0], rng)
    cycles = cut(cutter, x, t)
    assert len(cycles) > 10 and any(c.quality for c in cycles)
    assert all(a.end <= b.start for a, b in itertools.pairwise(cycles))
    for _ in range(4):
        assert _pushed(cutter, t, x, _splits(rng, len(t))) == cycles
    assert _pushed(cutter, t, x, [1] * len(t)) == cycles


@pytest.mark.parametrize("name", sorted(_CUTTERS))
def test_cutter_configs_round_trip(name: str) -> None:
    cutter = _CUTTERS[name]()
    again = cutter_from_config(json.loads(json.dumps(cutter.to_config())))
    assert again == cutter and again.kind == cutter.kind


@pytest.mark.parametrize(
    "config,match",
    [
        ({"kind": "period", "period": 86400.0}, "needs the keys"),
        (
            {**PeriodCutter(86400.0, 300.0).to_config(), "tz": "Mars/Olympus_Mons"},
            "unknown time zone",
        ),
        ({**PeriodCutter(86400.0, 300.0).to_config(), "interval": "often"}, "bad 'period'"),
        ({**PeriodCutter(86400.0, 300.0).to_config(), "interval": 0.0}, "interval <= period"),
        (
            {**PeriodCutter(3600.0, 60.0).to_config(), "tz": "Europe/Paris"},
            "at least one day",
        ),
        ({**FiducialCutter(64.0, 0.5).to_config(), "polarity": 0}, "polarity"),
        ({**FiducialCutter(64.0, 0.5).to_config(), "refractory": 0.9}, "refractory"),
        ({**FiducialCutter(64.0, 0.5).to_config(), "max_factor": 0.9}, "max_factor > 1"),
    ],
)
def test_bad_cutter_configs_are_refused(config: dict[str, object], match: str) -> None:
    with pytest.raises(DataError, match=match):
        cutter_from_config(config)


def test_make_cutter_from_specs() -> None:
    t = np.arange(0.0, 10 * 86400.0, 600.0)
    x = np.sin(2 * np.pi * np.arange(t.size) / 37.0)
    assert make_cutter("fixed:40") == FixedCutter(40, 40)
    assert make_cutter("fixed:40:10") == FixedCutter(40, 10)
    assert make_cutter("period:86400", [(t, x)]) == PeriodCutter(86400.0, 600.0)
    week = make_cutter("period:604800:3600:+02:00", [(t, x)])
    assert week == PeriodCutter(604800.0, 600.0, offset=3600.0, tz="+02:00")
    fiducial = make_cutter("fiducial", [(t, x)])
    assert isinstance(fiducial, FiducialCutter) and abs(fiducial.period - 37.0) < 0.5
    for spec, match in [
        ("lunar", "unknown cycles spec"),
        ("fixed:forty", "bad cycles spec"),
        ("fixed", "bad cycles spec"),
        ("period:daily", "bad cycles spec"),
        ("period:86400:0:Atlantis", "unknown time zone"),
        ("fiducial:3", "unknown cycles spec"),
    ]:
        with pytest.raises(DataError, match=match) as err:
            make_cutter(spec, [(t, x)])
        assert "write" in str(err.value)
    with pytest.raises(DataError, match="pass training series"):
        make_cutter("fiducial")
    with pytest.raises(DataError, match="at least two samples"):
        make_cutter("period:86400")
