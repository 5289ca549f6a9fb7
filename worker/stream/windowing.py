"""Per-series windowing: samples in timestamp order -> one window per cycle of the series.

Transport-free: the Kafka loop feeds it samples with their source partition/offset, tests feed
it directly. Each series has its own :class:`~model.cycles.CycleStream` from the served model's
:class:`~model.cycles.Cutter` (``fixed`` windows of (length, hop), or cycles of varying length)
and a small buffer of its samples from the stream's ``keep_from`` on (at most the cutter's
``max_length`` plus one message's worth); every cycle the stream completes is emitted as a
:class:`Window` of its samples, with the cycle's quality flags.

Data quality:

* a timestamp equal to the previous one is dropped as ``duplicate``, an earlier one as
  ``out_of_order`` (both counted in :attr:`Windower.dropped`); neither reaches the cutter;
* a gap longer than ``gap_factor`` times the series' typical sampling interval (the median of
  its recent intervals) discards the partial cycle (``gap_reset`` samples), starts a fresh
  cycle stream for the series and flags its next window with ``gap_reset``;
* memory is bounded: series idle for ``idle_timeout_s`` are evicted (``evicted_idle``), and at
  most ``max_series`` series are tracked: the least recently updated one is evicted to make
  room (``evicted_series_cap``).

Offsets: :meth:`Windower.pending_offsets` gives, per partition, the earliest source offset
whose samples a cycle not yet emitted may still contain, so the caller never commits past them.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from model.cycles import Cutter, Cycle, CycleStream
from model.errors import DataError
from worker.errors import WrongWidthError

GAP_HISTORY = 16  # intervals kept per series to estimate its typical sampling interval


@dataclass(frozen=True)
class WindowingConfig:
    cutter: Cutter
    n_features: int
    gap_factor: float = 5.0  # 0 disables gap detection
    idle_timeout_s: float = 3600.0
    max_series: int = 100_000

    def __post_init__(self) -> None:
        if self.n_features < 1:
            raise DataError(f"n_features must be >= 1; got {self.n_features}")


@dataclass(frozen=True)
class Window:
    """One complete window (one cycle) of one series, with where its samples came from."""

    series_id: str
    partition: int
    timestamps: np.ndarray  # (L,) float64 seconds
    values: np.ndarray  # (L, F) float64
    first_offset: int
    last_offset: int
    quality: tuple[str, ...] = ()


@dataclass
class _Series:
    partition: int
    last_seen: float
    stream: CycleStream
    base: int = 0  # stream index of the first buffered sample
    pushed: int = 0  # samples pushed into the stream so far
    ts: list[float] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)  # each (F,)
    offsets: list[int] = field(default_factory=list)
    last_ts: float | None = None
    intervals: deque[float] = field(default_factory=lambda: deque(maxlen=GAP_HISTORY))
    flags: set[str] = field(default_factory=set)


class Windower:
    """Turns per-series samples into windows; see the module docstring for the rules."""

    def __init__(self, config: WindowingConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._clock = clock
        self._series: OrderedDict[str, _Series] = OrderedDict()  # least recently updated first
        self.dropped: Counter[str] = Counter()
        self.windows_emitted = 0

    def __len__(self) -> int:
        return len(self._series)

    def _new_series(self, partition: int, now: float) -> _Series:
        return _Series(partition=partition, last_seen=now, stream=self.config.cutter.stream())

    def add(
        self,
        series_id: str,
        partition: int,
        offset: int,
        timestamps: np.ndarray,
        values: np.ndarray,
    ) -> list[Window]:
        """Append one message's samples ((n,) timestamps, (n, F) values); returns new windows."""
        if values.ndim != 2 or values.shape[1] != self.config.n_features:
            raise WrongWidthError(
                f"series {series_id!r} sends {values.shape[-1]} features per sample but the model"
                f" expects {self.config.n_features}"
            )
        state = self._state(series_id, partition)
        out: list[Window] = []
        run: list[int] = []  # indices of this message's accepted samples not yet pushed
        times = timestamps.tolist()
        for i, t in enumerate(times):
            verdict = self._accept(state, float(t))
            if verdict == "gap":
                out += self._push(series_id, state, times, values, run, offset)
                run = []
                self._reset(state)
            if verdict != "drop":
                run.append(i)
        out += self._push(series_id, state, times, values, run, offset)
        self.windows_emitted += len(out)
        return out

    def _state(self, series_id: str, partition: int) -> _Series:
        now = self._clock()
        state = self._series.get(series_id)
        if state is None:
            if len(self._series) >= self.config.max_series:
                _, evicted = self._series.popitem(last=False)
                self.dropped["evicted_series_cap"] += len(evicted.ts)
            state = self._series[series_id] = self._new_series(partition, now)
            return state
        self._series.move_to_end(series_id)
        state.last_seen = now
        if state.partition != partition:  # re-keyed topic: offsets of two partitions
            self.dropped["partition_moved"] += len(state.ts)  # must not mix in one buffer
            state = self._series[series_id] = self._new_series(partition, now)
        return state

    def _accept(self, s: _Series, t: float) -> str:
        """The sample's fate: keep, drop (duplicate / out of order) or gap (keep after a reset)."""
        verdict = "keep"
        if s.last_ts is not None:
            if t == s.last_ts:
                self.dropped["duplicate"] += 1
                return "drop"
            if t < s.last_ts:
                self.dropped["out_of_order"] += 1
                return "drop"
            dt = t - s.last_ts
            if self._is_gap(s, dt):
                verdict = "gap"
            else:
                s.intervals.append(dt)
        s.last_ts = t
        return verdict

    def _reset(self, s: _Series) -> None:
        """A gap: the partial cycle is discarded and the series is cut afresh."""
        self.dropped["gap_reset"] += len(s.ts)
        s.ts.clear()
        s.rows.clear()
        s.offsets.clear()
        s.intervals.clear()
        s.stream = self.config.cutter.stream()
        s.base = s.pushed = 0
        s.flags.add("gap_reset")

    def _is_gap(self, s: _Series, dt: float) -> bool:
        if self.config.gap_factor <= 0 or len(s.intervals) < 3:
            return False
        # statistics.median on <= GAP_HISTORY floats: the same value as np.median (the middle
        # one, or the mean of the two middle ones) at a tenth of its per-call cost, which the
        # worker pays for every sample
        return dt > self.config.gap_factor * statistics.median(s.intervals)

    def _push(
        self,
        series_id: str,
        s: _Series,
        times: list[float],
        values: np.ndarray,
        run: list[int],
        offset: int,
    ) -> list[Window]:
        """Buffer the accepted samples ``run`` of one message, push them into the series'
        cycle stream and emit the cycles they complete; then drop what no cycle can need."""
        if not run:
            return []
        ts = np.array([times[i] for i in run], dtype=np.float64)
        rows = values[run].astype(np.float64, copy=False)
        skip = max(0, s.base - s.pushed)  # samples before keep_from (fixed hop > length)
        s.ts += ts[skip:].tolist()
        s.rows += list(rows[skip:])
        s.offsets += [offset] * max(0, len(run) - skip)
        s.pushed += len(run)
        out = [self._emit(series_id, s, c) for c in s.stream.push(ts, rows)]
        keep_from = s.stream.keep_from
        if keep_from > s.base:
            drop = keep_from - s.base
            del s.ts[:drop], s.rows[:drop], s.offsets[:drop]
            s.base = keep_from
        return out

    def _emit(self, series_id: str, s: _Series, cycle: Cycle) -> Window:
        lo, hi = cycle.start - s.base, cycle.end - s.base
        if lo < 0 or hi > len(s.ts):
            raise DataError(
                f"the {self.config.cutter.kind!r} cutter returned samples [{cycle.start},"
                f" {cycle.end}) of series {series_id!r} but only [{s.base}, {s.base + len(s.ts)})"
                " are buffered: its keep_from moved past a cycle it had not returned yet"
            )
        offsets = s.offsets[lo:hi]
        window = Window(
            series_id=series_id,
            partition=s.partition,
            timestamps=np.array(s.ts[lo:hi], dtype=np.float64),
            values=np.stack(s.rows[lo:hi]),
            first_offset=min(offsets),
            last_offset=max(offsets),
            quality=tuple(sorted(s.flags.union(cycle.quality))),
        )
        s.flags.clear()
        return window

    def evict_idle(self) -> int:
        """Forget series idle for longer than ``idle_timeout_s``; returns how many."""
        deadline = self._clock() - self.config.idle_timeout_s
        evicted = 0
        while self._series:
            series_id, state = next(iter(self._series.items()))
            if state.last_seen > deadline:
                break
            del self._series[series_id]
            self.dropped["evicted_idle"] += len(state.ts)
            evicted += 1
        return evicted

    def forget_partitions(self, partitions: Iterable[int]) -> int:
        """Drop the state of series on revoked partitions (their new owner re-reads them)."""
        gone = set(partitions)
        doomed = [k for k, s in self._series.items() if s.partition in gone]
        for k in doomed:
            del self._series[k]
        return len(doomed)

    def pending_offsets(self) -> dict[int, int]:
        """Per partition, the earliest offset whose samples a future cycle may contain."""
        out: dict[int, int] = {}
        for s in self._series.values():
            if s.offsets:
                first = s.offsets[0]
                if first < out.get(s.partition, first + 1):
                    out[s.partition] = first
        return out

    def buffered_samples(self) -> int:
        return sum(len(s.ts) for s in self._series.values())
