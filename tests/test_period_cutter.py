"""The ``period`` cutter: calendar cycles by timestamp, on the KPI data and around DST."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from model.cycles import PeriodCutter, cut, make_cutter

DAY = 86400.0


def _kpi(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    path = shared_data / "kpi" / "cpu4.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found (the KPI series of ../shared/data)")
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    return data[:, 0], data[:, 1:2]


def test_kpi_days_start_at_midnight_utc_and_short_days_are_flagged(shared_data: Path) -> None:
    t, x = _kpi(shared_data)
    day = np.floor(t / DAY)
    # remove 00:00-06:00 of the 10th day and the whole 20th-22nd days
    first = day[0]
    gone = ((day == first + 10) & (t - day * DAY < 6 * 3600)) | np.isin(day - first, [20, 21, 22])
    t, x = t[~gone], x[~gone]
    day = day[~gone]
    cutter = make_cutter("period:86400", [(t, x)])
    assert cutter == PeriodCutter(DAY, 300.0)
    cycles = cut(cutter, x, t)
    # one cycle per UTC day with samples, but the last (not complete: no later sample)
    assert [day[c.start] for c in cycles] == sorted(set(day))[:-1]
    for c in cycles:
        assert day[c.start] == day[c.end - 1]  # every sample of the cycle in its day
        assert c.end == len(t) or day[c.end] > day[c.start]  # and none of the day left out
        full = (c.end - c.start) == 288  # 5-minute samples: 288 a day
        midnight = t[c.start] % DAY == 0
        assert full == (c.quality == ()), c
        assert midnight or c.start == 0 or day[c.start] - first == 10
    assert cycles[0].quality == ("incomplete",)  # the series starts at 16:00 UTC
    late = next(c for c in cycles if day[c.start] - first == 10)
    assert late.quality == ("incomplete",) and t[late.start] % DAY == 6 * 3600
    assert not any(day[c.start] - first in (20, 21, 22) for c in cycles)  # no empty days


def _hourly(zone: str, start: str, days: int) -> np.ndarray:
    t0 = datetime.fromisoformat(start).replace(tzinfo=ZoneInfo(zone)).timestamp()
    return t0 + 3600.0 * np.arange(days * 24 + 2)


@pytest.mark.parametrize(
    "start,lengths",
    [("2021-03-26T00:00", [24, 24, 23, 24]), ("2021-10-29T00:00", [24, 24, 25, 24])],
)
def test_a_day_in_a_dst_zone_runs_from_midnight_to_midnight(start: str, lengths: list[int]) -> None:
    t = _hourly("Europe/Paris", start, 4)
    cycles = cut(PeriodCutter(DAY, 3600.0, tz="Europe/Paris"), np.zeros(len(t)), t)
    assert [len(c) for c in cycles] == lengths
    assert all(c.quality == () for c in cycles)  # 23 and 25 hours are full days there
    for c in cycles:
        local = datetime.fromtimestamp(t[c.start], ZoneInfo("Europe/Paris"))
        assert (local.hour, local.minute) == (0, 0)
    utc = cut(PeriodCutter(DAY, 3600.0), np.zeros(len(t)), t)
    assert [len(c) for c in utc][1:3] == [24, 24]  # UTC days know no clock change


def test_fixed_offsets_and_alignment_shift_the_boundaries() -> None:
    t = 1_599_999_600.0 + 600.0 * np.arange(3000)  # on the 10-minute grid
    x = np.zeros(len(t))
    for tz, offset, boundary in [("+02:00", 0.0, 22 * 3600), ("-05:30", 3600.0, 6.5 * 3600)]:
        cycles = cut(PeriodCutter(DAY, 600.0, offset=offset, tz=tz), x, t)
        assert {t[c.start] % DAY for c in cycles[1:]} == {boundary}
    weeks = cut(PeriodCutter(7 * DAY, 600.0), x, t)  # the epoch is a Thursday
    assert {datetime.fromtimestamp(t[c.start], ZoneInfo("UTC")).weekday() for c in weeks[1:]} == {3}
    assert [len(c) for c in weeks[1:]] == [1008] * (len(weeks) - 1)


def test_too_many_samples_are_cut_into_flagged_pieces() -> None:
    t = np.arange(0.0, 250.0)  # one sample a second where one every 10 s is expected
    cutter = PeriodCutter(100.0, 10.0, length_cap=30)
    cycles = cut(cutter, np.zeros(len(t)), t)
    # pieces of 30 while more samples follow in the same 100 s; the last piece of the open
    # third period (200-249) is not complete yet, but 30 samples of it are returned already
    assert [(c.start, c.end) for c in cycles] == [
        (0, 30),
        (30, 60),
        (60, 90),
        (90, 100),
        (100, 130),
        (130, 160),
        (160, 190),
        (190, 200),
        (200, 230),
    ]
    assert all("cycle_too_long" in c.quality for c in cycles)
    assert PeriodCutter(100.0, 10.0).max_length == 20  # twice the expected 10 by default
