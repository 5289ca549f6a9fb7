"""Per-series windowing: samples in timestamp order -> fixed-length, hopping windows.

Transport-free: the Kafka loop feeds it samples with their source partition/offset, tests feed
it directly. Each series keeps a small buffer (at most ``length`` samples plus one message's
worth); a window of ``length`` samples is emitted as soon as the buffer holds one, then the
buffer advances by ``hop`` samples.

Data quality:

* a timestamp equal to the previous one is dropped as ``duplicate``, an earlier one as
  ``out_of_order`` (both counted in :attr:`Windower.dropped`);
* a gap longer than ``gap_factor`` times the series' typical sampling interval (the median of
  its recent intervals) discards the partial window (``gap_reset`` samples) and flags the next
  window of that series with ``gap_reset``;
* memory is bounded: series idle for ``idle_timeout_s`` are evicted (``evicted_idle``), and at
  most ``max_series`` series are tracked: the least recently updated one is evicted to make
  room (``evicted_series_cap``).

Offsets: :meth:`Windower.pending_offsets` gives, per partition, the earliest source offset
whose samples still wait in a buffer, so the caller never commits past them.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from model.errors import DataError
from worker.errors import WrongWidthError

GAP_HISTORY = 16  # intervals kept per series to estimate its typical sampling interval


@dataclass(frozen=True)
class WindowingConfig:
    length: int
    hop: int
    n_features: int
    gap_factor: float = 5.0  # 0 disables gap detection
    idle_timeout_s: float = 3600.0
    max_series: int = 100_000

    def __post_init__(self) -> None:
        if self.length < 2 or self.hop < 1 or self.n_features < 1:
            raise DataError(
                f"window length must be >= 2, hop >= 1 and n_features >= 1; got {self.length},"
                f" {self.hop}, {self.n_features}"
            )


@dataclass(frozen=True)
class Window:
    """One complete window of one series, with where its samples came from."""

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
    ts: list[float] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)  # each (F,)
    offsets: list[int] = field(default_factory=list)
    last_ts: float | None = None
    intervals: deque[float] = field(default_factory=lambda: deque(maxlen=GAP_HISTORY))
    skip: int = 0  # samples still to discard when hop > length
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
        now = self._clock()
        state = self._series.get(series_id)
        if state is None:
            if len(self._series) >= self.config.max_series:
                _, evicted = self._series.popitem(last=False)
                self.dropped["evicted_series_cap"] += len(evicted.ts)
            state = _Series(partition=partition, last_seen=now)
            self._series[series_id] = state
        else:
            self._series.move_to_end(series_id)
            state.last_seen = now
            if state.partition != partition:  # re-keyed topic: offsets of two partitions
                self.dropped["partition_moved"] += len(state.ts)  # must not mix in one buffer
                state = self._series[series_id] = _Series(partition=partition, last_seen=now)
        out: list[Window] = []
        for t, row in zip(timestamps.tolist(), values, strict=True):
            self._append(state, float(t), row, offset)
            if len(state.ts) >= self.config.length:
                out.append(self._emit(series_id, state))
        self.windows_emitted += len(out)
        return out

    def _append(self, s: _Series, t: float, row: np.ndarray, offset: int) -> None:
        if s.last_ts is not None:
            if t == s.last_ts:
                self.dropped["duplicate"] += 1
                return
            if t < s.last_ts:
                self.dropped["out_of_order"] += 1
                return
            dt = t - s.last_ts
            if self._is_gap(s, dt):
                self.dropped["gap_reset"] += len(s.ts)
                s.ts.clear()
                s.rows.clear()
                s.offsets.clear()
                s.intervals.clear()
                s.skip = 0
                s.flags.add("gap_reset")
            else:
                s.intervals.append(dt)
        s.last_ts = t
        if s.skip:
            s.skip -= 1
            return
        s.ts.append(t)
        s.rows.append(row)
        s.offsets.append(offset)

    def _is_gap(self, s: _Series, dt: float) -> bool:
        if self.config.gap_factor <= 0 or len(s.intervals) < 3:
            return False
        return dt > self.config.gap_factor * float(np.median(s.intervals))

    def _emit(self, series_id: str, s: _Series) -> Window:
        n, hop = self.config.length, self.config.hop
        window = Window(
            series_id=series_id,
            partition=s.partition,
            timestamps=np.array(s.ts[:n], dtype=np.float64),
            values=np.stack(s.rows[:n]).astype(np.float64, copy=False),
            first_offset=min(s.offsets[:n]),
            last_offset=max(s.offsets[:n]),
            quality=tuple(sorted(s.flags)),
        )
        s.flags.clear()
        drop = min(hop, len(s.ts))
        del s.ts[:drop], s.rows[:drop], s.offsets[:drop]
        s.skip = hop - drop
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
        """Per partition, the earliest offset whose samples still wait in a buffer."""
        out: dict[int, int] = {}
        for s in self._series.values():
            if s.offsets:
                first = s.offsets[0]
                if first < out.get(s.partition, first + 1):
                    out[s.partition] = first
        return out

    def buffered_samples(self) -> int:
        return sum(len(s.ts) for s in self._series.values())
