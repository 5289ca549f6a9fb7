"""The ``period`` cutter: calendar cycles by timestamp (a day of traffic, a week).

Cycle ``k`` holds every sample whose timestamp lies in ``[B_k, B_k+1)``, where ``B_k`` is the
instant at which the local wall clock of the cutter's time zone reads ``k * period + offset``
seconds since the epoch (so with ``period=86400, offset=0`` a cycle runs from local midnight
to local midnight, 23 or 25 hours on the days a DST zone changes its clock). The time zone is
``"UTC"``, a fixed offset (``"+05:30"``, ``"-08:00"``) or an IANA name (``"Europe/Paris"``, via
the standard library's :mod:`zoneinfo`).

A cycle is complete when a sample at or after its end boundary arrives. It is expected to
hold ``(B_k+1 - B_k) / interval`` samples (``interval``: the typical sampling interval, fitted
on training timestamps); one with fewer than ``min_fill`` of them is returned flagged
``"incomplete"`` (the first cycle of a stream that starts mid-day, a cycle with missing
samples): the flag is the contract, the caller decides not to score it as normal. Gaps over
whole cycles produce no empty cycles. A cycle reaching ``max_length`` samples (sampling much
faster than ``interval``) is returned flagged ``"cycle_too_long"`` and its calendar cycle goes
on in a new piece, flagged the same way, so the buffer stays bounded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from model.cycles.base import Cycle, check_config
from model.errors import DataError

_EPOCH = datetime(1970, 1, 1)
_FIXED = re.compile(r"^([+-])(\d{1,2})(?::?(\d{2}))?$")


def parse_time_zone(name: str) -> tzinfo:
    """``"UTC"``, ``"+HH:MM"`` / ``"-HH"`` (a fixed offset) or an IANA zone name."""
    if name in ("UTC", "Z"):
        return UTC
    match = _FIXED.match(name)
    if match:
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
        if delta >= timedelta(hours=24):
            raise DataError(f"UTC offset {name!r} out of range; write e.g. '+05:30' or '-08:00'")
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise DataError(
            f"unknown time zone {name!r}: write 'UTC', a fixed offset such as '+02:00', "
            "or an IANA name such as 'Europe/Paris'"
        ) from exc


@dataclass(frozen=True)
class PeriodCutter:
    period: float  # seconds, e.g. 86400 (daily), 604800 (weekly)
    interval: float  # typical seconds between samples
    offset: float = 0.0  # wall-clock seconds of each boundary into its period
    tz: str = "UTC"
    min_fill: float = 0.9  # fraction of the expected samples below which a cycle is incomplete
    length_cap: int = 0  # the most samples in one cycle; 0: twice the expected count
    kind = "period"

    def __post_init__(self) -> None:
        zone = parse_time_zone(self.tz)
        if not (self.period > 0 and self.interval > 0 and self.interval <= self.period):
            raise DataError(
                f"period cycles need period > 0 and 0 < interval <= period (seconds), got {self}"
            )
        if not 0 <= self.min_fill <= 1:
            raise DataError(f"min_fill must be within [0, 1], got {self.min_fill}")
        if isinstance(zone, ZoneInfo) and self.period < 86400:
            raise DataError(
                f"a period of {self.period} s in the zone {self.tz!r}: time zones with clock "
                "changes need a period of at least one day (86400); use 'UTC' or a fixed "
                "offset such as '+02:00' for shorter periods"
            )
        if self.length_cap < 0 or 0 < self.length_cap < 2:
            raise DataError(f"length_cap must be 0 (automatic) or >= 2, got {self.length_cap}")

    @cached_property
    def zone(self) -> tzinfo:
        return parse_time_zone(self.tz)

    @property
    def max_length(self) -> int:
        return self.length_cap or max(2, math.ceil(2 * self.period / self.interval))

    def cycle_of(self, t: float) -> int:
        """The index ``k`` of the cycle holding timestamp ``t`` (``B_k <= t < B_k+1``)."""
        utc = datetime.fromtimestamp(t, UTC)
        offset = utc.astimezone(self.zone).utcoffset() or timedelta(0)
        k = math.floor((t + offset.total_seconds() - self.offset) / self.period)
        while self.boundary(k) > t:
            k -= 1
        while self.boundary(k + 1) <= t:
            k += 1
        return k

    def boundary(self, k: int) -> float:
        """``B_k``: the instant the local clock reads ``k * period + offset``."""
        wall = _EPOCH + timedelta(seconds=k * self.period + self.offset)
        return wall.replace(tzinfo=self.zone).timestamp()

    def stream(self) -> _PeriodStream:
        return _PeriodStream(self)

    def to_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "period": self.period,
            "interval": self.interval,
            "offset": self.offset,
            "tz": self.tz,
            "min_fill": self.min_fill,
            "length_cap": self.length_cap,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PeriodCutter:
        keys = {"period", "interval", "offset", "tz", "min_fill", "length_cap"}
        data = check_config(config, cls.kind, keys)
        return cls(
            period=float(data["period"]),
            interval=float(data["interval"]),
            offset=float(data["offset"]),
            tz=str(data["tz"]),
            min_fill=float(data["min_fill"]),
            length_cap=int(data["length_cap"]),
        )


def fit_interval(timestamps: list[np.ndarray]) -> float:
    """The typical sampling interval of training series: the median step between samples."""
    steps = [np.diff(np.asarray(t, dtype=np.float64)) for t in timestamps]
    steps = [s for s in steps if s.size]
    if not steps:
        raise DataError("the sampling interval needs training series of at least two samples")
    interval = float(np.median(np.concatenate(steps)))
    if not interval > 0:
        raise DataError("training timestamps must increase: sort and de-duplicate them")
    return interval


class _PeriodStream:
    def __init__(self, cutter: PeriodCutter) -> None:
        self.cutter = cutter
        self.seen = 0  # samples pushed so far
        self.start = 0  # first sample of the open cycle
        self.k: int | None = None  # its calendar cycle; None before the first sample
        self.end = -math.inf  # its end boundary B_k+1
        self.last = -math.inf  # the last timestamp pushed
        self.split = False  # whether the open cycle continues a piece cut at max_length

    @property
    def keep_from(self) -> int:
        return self.start

    def push(self, timestamps: np.ndarray, values: np.ndarray) -> list[Cycle]:
        t = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        if t.size and not (t[0] > self.last and np.all(np.diff(t) > 0)):
            raise DataError(
                "period cycles need strictly increasing timestamps across pushes; "
                "sort and de-duplicate the series first"
            )
        out: list[Cycle] = []
        i = 0
        while i < t.size:
            if t[i] >= self.end:  # the open cycle is complete: open the cycle of t[i]
                if self.k is not None:
                    out += self._close(self.seen + i)
                self.k = self.cutter.cycle_of(float(t[i]))
                self.end = self.cutter.boundary(self.k + 1)
            j = i + int(np.searchsorted(t[i:], self.end, side="left"))
            cap = self.start + self.cutter.max_length - (self.seen + i)  # room in this piece
            if j - i > cap:  # too many samples for one cycle: return a piece, go on
                j = i + cap
                out.append(Cycle(self.start, self.seen + j, ("cycle_too_long",)))
                self.start, self.split = self.seen + j, True
            i = j
        self.seen += t.size
        if t.size:
            self.last = float(t[-1])
        return out

    def _close(self, end: int) -> list[Cycle]:
        """The open cycle, ending before sample ``end`` (none when a split left it empty)."""
        assert self.k is not None
        cutter = self.cutter
        expected = (self.end - cutter.boundary(self.k)) / cutter.interval
        flags: tuple[str, ...] = ()
        if end - self.start < cutter.min_fill * expected:
            flags = ("incomplete",)
        if self.split:
            flags += ("cycle_too_long",)
        cycles = [Cycle(self.start, end, flags)] if end > self.start else []
        self.start, self.split = end, False
        return cycles
