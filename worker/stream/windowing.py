"""Per-series windowing: samples in timestamp order -> one window per cycle of the series.

Transport-free: the Kafka loop feeds it samples with their source partition/offset, tests feed
it directly. Each series has its own :class:`~model.cycles.CycleStream` from the served model's
:class:`~model.cycles.Cutter` (``fixed`` windows of (length, hop), or cycles of varying length)
and a small buffer of its samples from the stream's ``keep_from`` on (at most the cutter's
``max_length`` plus one call's worth); every cycle the stream completes is emitted as a
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

Cost: :meth:`Windower.add` takes any number of samples of one series, each with its own source
offset (the records of one poll, grouped by series), and gives exactly the windows, counters
and pending offsets of adding them record by record. A run whose timestamps increase with no
interval above ``gap_factor`` times the least interval (of the run and of the series' recent
ones) cannot hold a gap (a median is at least the minimum), so it is accepted at once and
pushed to the cutter in one call; only other runs take the per-sample path. Samples are
buffered in growing numpy arrays, and the pending offsets are kept in per-partition heaps, so
neither costs Python work per buffered sample.
"""

from __future__ import annotations

import heapq
import math
import statistics
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from model.cycles import Cutter, Cycle, CycleStream
from model.errors import DataError
from worker.errors import WrongWidthError

GAP_HISTORY = 16  # intervals kept per series to estimate its typical sampling interval
VECTOR_FROM = 32  # runs of more samples check their intervals with numpy, shorter ones in Python

Offsets = int | np.ndarray  # one source offset for every sample, or (n,) one per sample


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


class _Buffer:
    """A series' buffered samples: rows ``[head, tail)`` of growing arrays (timestamps, values,
    source offsets); appending writes slices, dropping the oldest moves ``head``."""

    __slots__ = ("first", "head", "offsets", "tail", "ts", "values")

    def __init__(self, n_features: int) -> None:
        self.ts = np.empty(0)
        self.values = np.empty((0, n_features))
        self.offsets = np.empty(0, dtype=np.int64)
        self.head = self.tail = 0
        self.first: int | None = None  # offset of the first buffered sample, if any

    def __len__(self) -> int:
        return self.tail - self.head

    def append(self, ts: np.ndarray, values: np.ndarray, offsets: Offsets) -> None:
        k = len(ts)
        if self.tail + k > len(self.ts):
            self._make_room(k)
        a, b = self.tail, self.tail + k
        self.ts[a:b] = ts
        self.values[a:b] = values
        self.offsets[a:b] = offsets
        self.tail = b
        if self.first is None and k:
            self.first = int(self.offsets[a])

    def _make_room(self, k: int) -> None:
        """Room for ``k`` more rows: move the live rows to the front when that frees at least
        half the arrays (amortised O(1) per row), else grow them to twice what is needed."""
        n, cap = len(self), len(self.ts)
        if 2 * (n + k) <= cap:
            fields: tuple[np.ndarray, ...] = (self.ts, self.values, self.offsets)
            for arr in fields:
                arr[:n] = arr[self.head : self.tail]  # numpy copies overlapping ranges right
            self.head, self.tail = 0, n
        else:
            self.reallocate(2 * (n + k))

    def reallocate(self, capacity: int) -> None:
        """New arrays of ``capacity`` (at least 4) rows holding the live rows from row 0."""
        n, capacity = len(self), max(capacity, 4)
        ts, values, offsets = (
            np.empty(capacity),
            np.empty((capacity, self.values.shape[1])),
            np.empty(capacity, dtype=np.int64),
        )
        ts[:n], values[:n], offsets[:n] = self.live()
        self.ts, self.values, self.offsets = ts, values, offsets
        self.head, self.tail = 0, n

    def live(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, t = self.head, self.tail
        return self.ts[h:t], self.values[h:t], self.offsets[h:t]

    def drop_first(self, k: int) -> None:
        self.head = min(self.head + k, self.tail)
        if self.head == self.tail:
            self.head = self.tail = 0
            self.first = None
        else:
            self.first = int(self.offsets[self.head])


@dataclass(slots=True)
class _Series:
    partition: int
    last_seen: float
    stream: CycleStream
    buffer: _Buffer
    base: int = 0  # stream index of the first buffered sample
    pushed: int = 0  # samples pushed into the stream so far
    last_ts: float | None = None
    intervals: list[float] = field(default_factory=list)  # the last GAP_HISTORY, oldest first
    floor: float = math.inf  # at most min(intervals) (its minimum once intervals dropped out)
    gap_reset: bool = False  # whether the next window follows a gap
    noted: int | None = None  # its buffer's first offset when last noted for pending_offsets


class Windower:
    """Turns per-series samples into windows; see the module docstring for the rules."""

    def __init__(self, config: WindowingConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._clock = clock
        self._series: OrderedDict[str, _Series] = OrderedDict()  # least recently updated first
        # per partition, (first buffered offset, series) pushed whenever a series' first
        # buffered offset changes; an entry no longer true of its series is stale and popped
        # when it reaches the top (lazy deletion), see pending_offsets
        self._pending: dict[int, list[tuple[int, str]]] = {}
        self._pending_entries = 0
        self.dropped: Counter[str] = Counter()
        self.windows_emitted = 0
        # a buffer's arrays larger than this are shrunk once their samples were cut: twice
        # what one-sample messages need, so only a large message's room is given back
        self._roomy = 4 * (config.cutter.max_length + 16)

    def __len__(self) -> int:
        return len(self._series)

    def __contains__(self, series_id: object) -> bool:
        return series_id in self._series

    def _new_series(self, partition: int, now: float) -> _Series:
        return _Series(
            partition=partition,
            last_seen=now,
            stream=self.config.cutter.stream(),
            buffer=_Buffer(self.config.n_features),
        )

    def check_width(self, series_id: str, values: np.ndarray) -> None:
        """Raise :class:`WrongWidthError` unless ``values`` is (n, n_features)."""
        if values.ndim != 2 or values.shape[1] != self.config.n_features:
            raise WrongWidthError(
                f"series {series_id!r} sends {values.shape[-1]} features per sample but the model"
                f" expects {self.config.n_features}"
            )

    def add(
        self,
        series_id: str,
        partition: int,
        offsets: Offsets,
        timestamps: np.ndarray,
        values: np.ndarray,
    ) -> list[Window]:
        """Append samples of one series ((n,) timestamps, (n, F) values) from ``partition``,
        with their source ``offsets`` (one int for all, e.g. one record's, or (n,) ints, e.g.
        the records of one poll); returns the new windows, exactly those of adding the samples
        in order one record at a time."""
        self.check_width(series_id, values)
        t = np.asarray(timestamps, dtype=np.float64)
        t = t if t.ndim == 1 else t.reshape(-1)
        x = np.asarray(values, dtype=np.float64)
        if not isinstance(offsets, int):
            offsets = np.asarray(offsets, dtype=np.int64)
            if offsets.ndim == 0:
                offsets = int(offsets)
            elif offsets.shape != t.shape:
                raise DataError(f"{offsets.shape} source offsets for {len(t)} samples")
        if len(x) != len(t):
            raise DataError(f"{len(t)} timestamps for {len(x)} samples of series {series_id!r}")
        state = self._state(series_id, partition)
        try:
            if self._accept_all(state, t):
                out = self._push(series_id, state, t, x, offsets)
            else:
                out = self._add_each(series_id, state, t, x, offsets)
        finally:  # even after a cutter's error: the buffer may hold new samples
            first = state.buffer.first
            if first != state.noted:
                state.noted = first
                if first is not None:
                    self._note_pending(partition, first, series_id)
        self.windows_emitted += len(out)
        return out

    def _state(self, series_id: str, partition: int) -> _Series:
        now = self._clock()
        state = self._series.get(series_id)
        if state is None:
            if len(self._series) >= self.config.max_series:
                _, evicted = self._series.popitem(last=False)
                self.dropped["evicted_series_cap"] += len(evicted.buffer)
            state = self._series[series_id] = self._new_series(partition, now)
            return state
        self._series.move_to_end(series_id)
        state.last_seen = now
        if state.partition != partition:  # re-keyed topic: offsets of two partitions
            self.dropped["partition_moved"] += len(state.buffer)  # must not mix in one buffer
            state = self._series[series_id] = self._new_series(partition, now)
        return state

    def _accept_all(self, s: _Series, t: np.ndarray) -> bool:
        """Whether every sample is kept with no gap, decided at once: the timestamps increase
        and no interval exceeds ``gap_factor`` times the least one of the run and of the
        series' history (each per-sample median is at least that least one). If so, records
        the run's intervals and last timestamp as the per-sample path would; else changes
        nothing (the per-sample path decides)."""
        if not len(t):
            return True
        if len(t) > VECTOR_FROM:
            d = np.diff(t) if s.last_ts is None else np.diff(t, prepend=s.last_ts)
            if not d.min() > 0:  # also False on NaN
                return False
            dts, lo, hi = d.tolist(), float(d.min()), float(d.max())
        else:
            dts, prev = [], s.last_ts
            for now in t.tolist():
                if prev is not None:
                    dt = now - prev
                    if not dt > 0:
                        return False
                    dts.append(dt)
                prev = now
            lo, hi = (min(dts), max(dts)) if dts else (math.inf, 0.0)
        gap_factor = self.config.gap_factor
        if gap_factor > 0 and dts:
            if hi > gap_factor * min(lo, s.floor) and s.intervals:  # the bound may be stale
                s.floor = min(s.intervals)
            if hi > gap_factor * min(lo, s.floor):
                return False
            s.floor = min(lo, s.floor)
            s.intervals += dts[-GAP_HISTORY:]
            del s.intervals[:-GAP_HISTORY]
        s.last_ts = float(t[-1])
        return True

    def _add_each(
        self, series_id: str, s: _Series, t: np.ndarray, x: np.ndarray, offsets: Offsets
    ) -> list[Window]:
        """The per-sample path: drops duplicates and out-of-order samples, resets at gaps."""
        out: list[Window] = []
        run: list[int] = []  # indices of the accepted samples not yet pushed
        for i, ti in enumerate(t.tolist()):
            verdict = self._accept(s, ti)
            if verdict == "gap":
                out += self._push_some(series_id, s, t, x, offsets, run)
                run = []
                self._reset(s)
            if verdict != "drop":
                run.append(i)
        out += self._push_some(series_id, s, t, x, offsets, run)
        return out

    def _push_some(
        self,
        series_id: str,
        s: _Series,
        t: np.ndarray,
        x: np.ndarray,
        offsets: Offsets,
        run: list[int],
    ) -> list[Window]:
        if len(run) == len(t):
            return self._push(series_id, s, t, x, offsets)
        some = offsets if isinstance(offsets, int) else offsets[run]
        return self._push(series_id, s, t[run], x[run], some)

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
            elif self.config.gap_factor > 0:
                s.intervals.append(dt)
                s.floor = min(s.floor, dt)
                if len(s.intervals) > GAP_HISTORY:
                    del s.intervals[0]
        s.last_ts = t
        return verdict

    def _reset(self, s: _Series) -> None:
        """A gap: the partial cycle is discarded and the series is cut afresh."""
        self.dropped["gap_reset"] += len(s.buffer)
        s.buffer.drop_first(len(s.buffer))
        s.intervals.clear()
        s.floor = math.inf
        s.stream = self.config.cutter.stream()
        s.base = s.pushed = 0
        s.gap_reset = True

    def _is_gap(self, s: _Series, dt: float) -> bool:
        if self.config.gap_factor <= 0 or len(s.intervals) < 3:
            return False
        # statistics.median on <= GAP_HISTORY floats: the same value as np.median (the middle
        # one, or the mean of the two middle ones) at a tenth of its per-call cost
        return dt > self.config.gap_factor * statistics.median(s.intervals)

    def _push(
        self, series_id: str, s: _Series, t: np.ndarray, x: np.ndarray, offsets: Offsets
    ) -> list[Window]:
        """Buffer accepted samples, push them into the series' cycle stream and emit the
        cycles they complete; then drop what no cycle can need."""
        if not len(t):
            return []
        skip = max(0, s.base - s.pushed)  # samples before keep_from (fixed hop > length)
        if skip == 0:
            s.buffer.append(t, x, offsets)
        elif skip < len(t):
            kept = offsets if isinstance(offsets, int) else offsets[skip:]
            s.buffer.append(t[skip:], x[skip:], kept)
        s.pushed += len(t)
        out = [self._emit(series_id, s, c) for c in s.stream.push(t, x)]
        keep_from = s.stream.keep_from
        if keep_from > s.base:
            s.buffer.drop_first(keep_from - s.base)
            s.base = keep_from
        room = len(s.buffer.ts)
        if room > self._roomy and room > 4 * len(s.buffer):  # a large message was cut
            s.buffer.reallocate(2 * len(s.buffer))  # give its room back
        return out

    def _emit(self, series_id: str, s: _Series, cycle: Cycle) -> Window:
        lo, hi = cycle.start - s.base, cycle.end - s.base
        if lo < 0 or hi > len(s.buffer):
            raise DataError(
                f"the {self.config.cutter.kind!r} cutter returned samples [{cycle.start},"
                f" {cycle.end}) of series {series_id!r} but only [{s.base},"
                f" {s.base + len(s.buffer)}) are buffered: its keep_from moved past a cycle it"
                " had not returned yet"
            )
        ts, values, offsets = (arr[lo:hi] for arr in s.buffer.live())
        quality = set(cycle.quality)
        if s.gap_reset:
            quality.add("gap_reset")
            s.gap_reset = False
        return Window(
            series_id=series_id,
            partition=s.partition,
            timestamps=ts.copy(),
            values=values.copy(),
            first_offset=int(offsets.min()),
            last_offset=int(offsets.max()),
            quality=tuple(sorted(quality)),
        )

    def evict_idle(self) -> int:
        """Forget series idle for longer than ``idle_timeout_s``; returns how many."""
        deadline = self._clock() - self.config.idle_timeout_s
        evicted = 0
        while self._series:
            series_id, state = next(iter(self._series.items()))
            if state.last_seen > deadline:
                break
            del self._series[series_id]
            self.dropped["evicted_idle"] += len(state.buffer)
            evicted += 1
        return evicted

    def forget_partitions(self, partitions: Iterable[int]) -> int:
        """Drop the state of series on revoked partitions (their new owner re-reads them)."""
        gone = set(partitions)
        doomed = [k for k, s in self._series.items() if s.partition in gone]
        for k in doomed:
            del self._series[k]
        for p in gone:
            self._pending_entries -= len(self._pending.pop(p, ()))
        return len(doomed)

    def take_series(self, series_id: str) -> tuple[int, np.ndarray, np.ndarray, np.ndarray] | None:
        """Forget ``series_id`` and return its buffered samples as (partition, offsets,
        timestamps, values), for another windower to go on from (a series routed to another
        model); None when it has no state here."""
        s = self._series.pop(series_id, None)
        if s is None:
            return None
        ts, values, offsets = s.buffer.live()
        return s.partition, offsets.copy(), ts.copy(), values.copy()

    def _note_pending(self, partition: int, offset: int, series_id: str) -> None:
        heapq.heappush(self._pending.setdefault(partition, []), (offset, series_id))
        self._pending_entries += 1
        if self._pending_entries > 4 * len(self._series) + 1024:  # mostly stale: rebuild
            self._pending = {}
            for sid, s in self._series.items():
                if s.noted is not None:
                    self._pending.setdefault(s.partition, []).append((s.noted, sid))
            for heap in self._pending.values():
                heapq.heapify(heap)
            self._pending_entries = sum(len(h) for h in self._pending.values())

    def pending_offsets(self) -> dict[int, int]:
        """Per partition, the earliest offset whose samples a future cycle may contain (the
        least first buffered offset of its series; stale heap entries are popped on the way)."""
        out: dict[int, int] = {}
        for partition, heap in list(self._pending.items()):
            while heap:
                offset, series_id = heap[0]
                s = self._series.get(series_id)
                if s is not None and s.partition == partition and s.noted == offset:
                    out[partition] = offset
                    break
                heapq.heappop(heap)
                self._pending_entries -= 1
            if not heap:
                del self._pending[partition]
        return out

    def buffered_samples(self) -> int:
        return sum(len(s.buffer) for s in self._series.values())
