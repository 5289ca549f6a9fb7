"""Cycle cutting: every cutter gives the same cycles offline and for any split into pushes."""

from __future__ import annotations

import numpy as np
import pytest

from model.cycles import FixedCutter, cut, cutter_from_config, cycle_windows
from model.errors import DataError


def _pushed(cutter, t: np.ndarray, x: np.ndarray, sizes: list[int]):  # type: ignore[no-untyped-def]
    stream, out, i = cutter.stream(), [], 0
    for n in sizes:
        out += stream.push(t[i : i + n], x[i : i + n])
        i += n
    out += stream.push(t[i:], x[i:])
    return out


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
