"""The ``fiducial`` cutter: shape cycles, one per fiducial point (a heartbeat's R peak).

One feature of the series, times ``polarity`` (+1: peaks, -1: troughs), is searched for
fiducial points with :func:`scipy.signal.find_peaks`: local maxima whose prominence, measured
within ``wlen`` samples centred on them, is at least ``prominence``. Such a decision depends
only on the ``wlen // 2`` samples either side of the point (a plateau is a peak only when it
fits in that window), so it is taken once that right context has arrived and is the same for
any split of the series into pushes. Candidates are then accepted greedily in time order, each
at least ``refractory * period`` samples after the last accepted one.

Each cycle runs from ``lead * period`` samples before one fiducial point to the same before the
next; lengths vary. Quality flags (the cycle is still returned, never merged):

* ``"cycle_too_short"``: shorter than ``min_factor * period`` (a spurious fiducial point);
* ``"cycle_too_long"``: no fiducial point for ``max_factor * period`` samples (a missed one, a
  flat line): a cycle of that many samples is returned and cutting goes on from its end;
* ``"cycle_unaligned"``: the cycle does not start at a fiducial point (the stream's first
  samples, the cycle after a ``"cycle_too_long"`` one).

``period`` (in samples), ``polarity`` and ``prominence`` are fitted on training series by
:func:`model.cycles.fiducial_fit.fit_fiducial`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import find_peaks

from model.cycles.base import Cycle, check_config
from model.errors import DataError


@dataclass(frozen=True)
class FiducialCutter:
    period: float  # typical cycle length, samples
    prominence: float  # the least prominence of a fiducial point (in the feature's units)
    polarity: int = 1  # +1: fiducial points are peaks, -1: troughs
    feature: int = 0  # the feature searched for fiducial points
    lead: float = 0.35  # a cycle starts this fraction of the period before its fiducial point
    refractory: float = 0.4  # the least distance between fiducial points, fraction of the period
    min_factor: float = 0.5  # shorter cycles are flagged "cycle_too_short"
    max_factor: float = 1.6  # no cycle is longer; one cut there is flagged "cycle_too_long"
    window: float = 0.5  # wlen of the prominence, as a fraction of the period
    kind = "fiducial"

    def __post_init__(self) -> None:
        if not (self.period >= 4 and self.prominence > 0 and self.polarity in (1, -1)):
            raise DataError(
                "fiducial cycles need period >= 4 samples, prominence > 0 and polarity +1 or "
                f"-1, got {self}"
            )
        if self.feature < 0:
            raise DataError(f"feature must be a column index >= 0, got {self.feature}")
        if not (0 <= self.lead < 1 and 0 < self.refractory <= self.min_factor < 1):
            raise DataError(
                "fiducial cycles need 0 <= lead < 1 and 0 < refractory <= min_factor < 1, "
                f"got lead={self.lead}, refractory={self.refractory}, "
                f"min_factor={self.min_factor}"
            )
        if not (self.max_factor > 1 and 0 < self.window <= 2):
            raise DataError(f"fiducial cycles need max_factor > 1 and 0 < window <= 2, got {self}")

    @property
    def lead_samples(self) -> int:
        """Samples from a cycle's start to its fiducial point."""
        return round(self.lead * self.period)

    @property
    def half_window(self) -> int:
        """Samples either side of a fiducial point that decide it (``wlen // 2``)."""
        return max(1, round(self.window * self.period / 2))

    @property
    def max_length(self) -> int:
        return max(2, math.floor(self.max_factor * self.period))

    @property
    def lag(self) -> int:
        """How far the newest sample can be past the open cycle's ``max_length``: a stream
        keeps at most ``max_length + lag`` samples (its ``keep_from``)."""
        return self.lead_samples + self.half_window

    @property
    def min_length(self) -> int:
        return math.ceil(self.min_factor * self.period)

    def stream(self) -> _FiducialStream:
        return _FiducialStream(self)

    def to_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "period": self.period,
            "prominence": self.prominence,
            "polarity": self.polarity,
            "feature": self.feature,
            "lead": self.lead,
            "refractory": self.refractory,
            "min_factor": self.min_factor,
            "max_factor": self.max_factor,
            "window": self.window,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FiducialCutter:
        keys = {"period", "prominence", "polarity", "feature", "lead", "refractory"}
        data = check_config(config, cls.kind, keys | {"min_factor", "max_factor", "window"})
        floats = {k: float(v) for k, v in data.items() if k not in ("polarity", "feature")}
        return cls(polarity=int(data["polarity"]), feature=int(data["feature"]), **floats)


def fiducial_candidates(cutter: FiducialCutter, y: np.ndarray, first: int) -> np.ndarray:
    """Positions (within ``y``) of the fiducial candidates of a polarised signal ``y``, among
    positions ``first`` onwards that have ``half_window`` samples of right context in ``y``.

    The caller guarantees ``half_window`` samples of left context before ``first`` (or that
    ``y`` starts the series); a candidate then depends only on its window, whatever ``y``'s
    extent."""
    w = cutter.half_window
    last = y.size - 1 - w  # the last position with its full right context
    if last < first:
        return np.empty(0, dtype=np.int64)
    if last == first and 0 < first < y.size - 1:  # one new position (a single-sample push):
        v = y[first]  # a peak is at least as high as both neighbours; most samples are not
        if v < y[first - 1] or v < y[first + 1]:
            return np.empty(0, dtype=np.int64)
    lo = max(0, first - w)
    part = y[lo:]
    if part[first - lo : last - lo + 1].max() - part.min() < cutter.prominence:
        return np.empty(0, dtype=np.int64)  # no sample rises enough: the common case
    peaks, props = find_peaks(part, prominence=cutter.prominence, wlen=2 * w + 1, plateau_size=1)
    peaks = peaks + lo
    left, right = props["left_edges"] + lo, props["right_edges"] + lo
    keep = (peaks >= first) & (peaks <= last) & (left - 1 >= peaks - w) & (right + 1 <= peaks + w)
    return peaks[keep].astype(np.int64)


class _FiducialStream:
    #: dead samples left of the decision window kept before the buffer is compacted (compacting
    #: at every push would copy the window each sample; what is kept changes no decision)
    COMPACT_AFTER = 4096

    def __init__(self, cutter: FiducialCutter) -> None:
        self.cutter = cutter
        self.half_window = cutter.half_window  # the properties, computed once per stream
        self.min_gap = cutter.refractory * cutter.period
        self.seen = 0  # samples pushed so far
        self.buf = np.empty(max(64, 4 * (cutter.max_length + cutter.lag)))
        self.n = 0  # valid samples in buf: the polarised feature from sample self.y0 on
        self.y0 = 0
        self.decided = 0  # every position before this one is decided
        self.last: int | None = None  # the last accepted fiducial point
        self.start = 0  # first sample of the open cycle
        self.aligned = False  # whether it starts lead samples before a fiducial point

    @property
    def keep_from(self) -> int:
        return self.start

    def push(self, timestamps: np.ndarray, values: np.ndarray) -> list[Cycle]:
        x = np.asarray(values, dtype=np.float64)
        x = x[:, None] if x.ndim == 1 else x
        if x.shape[0] and x.shape[1] <= self.cutter.feature:
            raise DataError(
                f"the fiducial cutter reads feature {self.cutter.feature} of series with "
                f"{x.shape[1]} feature(s); refit it on series like these"
            )
        self._append(self.cutter.polarity * x[:, self.cutter.feature])
        self.seen += x.shape[0]
        y = self.buf[: self.n]
        peaks = fiducial_candidates(self.cutter, y, self.decided - self.y0) + self.y0
        out: list[Cycle] = []
        for p in peaks.tolist():
            if self.last is None or p - self.last >= self.min_gap:
                out += self._forced_cuts(p)
                out += self._accept(p)
        self.decided = max(self.decided, self.seen - self.half_window)
        out += self._forced_cuts(self.decided)
        return out

    def _append(self, y: np.ndarray) -> None:
        """Append to the buffer, first dropping what no decision needs (when there is much)."""
        dead = self.decided - self.half_window - self.y0
        if dead > self.COMPACT_AFTER or self.n + y.size > self.buf.size:
            dead = max(0, dead)
            kept = self.buf[dead : self.n]
            if kept.size + y.size > self.buf.size:
                self.buf = np.empty(2 * (kept.size + y.size))
            self.buf[: kept.size] = kept
            self.n, self.y0 = kept.size, self.y0 + dead
        self.buf[self.n : self.n + y.size] = y
        self.n += y.size

    def _accept(self, p: int) -> list[Cycle]:
        self.last = p
        begin = p - self.cutter.lead_samples
        if begin < self.start:  # only at the stream's start: the cycle keeps its start
            self.aligned = False
            return []
        out = [self._cycle(begin)] if begin > self.start else []
        self.start, self.aligned = begin, True
        return out

    def _forced_cuts(self, decided: int) -> list[Cycle]:
        """The ``"cycle_too_long"`` cycles owed once every position before ``decided`` is
        decided with no fiducial point accepted since the open cycle's start."""
        out = []
        length, lead = self.cutter.max_length, self.cutter.lead_samples
        while decided >= self.start + length + lead:
            flags = ("cycle_too_long",) + (() if self.aligned else ("cycle_unaligned",))
            out.append(Cycle(self.start, self.start + length, flags))
            self.start, self.aligned = self.start + length, False
        return out

    def _cycle(self, end: int) -> Cycle:
        flags: tuple[str, ...] = ()
        if end - self.start < self.cutter.min_length:
            flags += ("cycle_too_short",)
        if not self.aligned:
            flags += ("cycle_unaligned",)
        return Cycle(self.start, end, flags)
