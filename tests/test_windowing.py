"""The transport-free core: windowing, microbatching and offset bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest

from model.cycles import FixedCutter
from model.errors import DataError
from worker.errors import WrongWidthError
from worker.stream.batching import MicroBatcher
from worker.stream.offsets import OffsetTracker
from worker.stream.windowing import Windower, WindowingConfig


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def feed(
    w: Windower,
    sid: str,
    ts: list[float],
    vals: list[float],
    partition: int = 0,
    first_offset: int = 0,
) -> list:  # type: ignore[type-arg]
    out = []
    for i, (t, v) in enumerate(zip(ts, vals, strict=True)):
        out += w.add(sid, partition, first_offset + i, np.array([t]), np.array([[v]]))
    return out


def test_consecutive_windows_with_hop_equal_length() -> None:
    w = Windower(WindowingConfig(cutter=FixedCutter(4, 4), n_features=1))
    wins = feed(w, "s", list(range(10)), [float(i) for i in range(10)])
    assert [x.values[:, 0].tolist() for x in wins] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [(x.first_offset, x.last_offset) for x in wins] == [(0, 3), (4, 7)]
    assert w.pending_offsets() == {0: 8}  # samples 8, 9 wait for the next window


def test_overlapping_and_skipping_hops() -> None:
    w = Windower(WindowingConfig(cutter=FixedCutter(4, 2), n_features=1))
    wins = feed(w, "s", list(range(8)), list(range(8)))
    assert [x.timestamps.tolist() for x in wins] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]
    w = Windower(WindowingConfig(cutter=FixedCutter(3, 5), n_features=1))
    wins = feed(w, "s", list(range(13)), list(range(13)))
    assert [x.timestamps.tolist() for x in wins] == [[0, 1, 2], [5, 6, 7], [10, 11, 12]]


def test_chunk_spanning_several_windows() -> None:
    w = Windower(WindowingConfig(cutter=FixedCutter(3, 3), n_features=2))
    values = np.arange(20, dtype=float).reshape(10, 2)
    wins = w.add("s", 1, 42, np.arange(10.0), values)
    assert len(wins) == 3 and all(x.first_offset == x.last_offset == 42 for x in wins)
    np.testing.assert_array_equal(wins[1].values, values[3:6])
    assert w.pending_offsets() == {1: 42}


def test_duplicates_and_out_of_order_are_dropped_and_counted() -> None:
    w = Windower(WindowingConfig(cutter=FixedCutter(3, 3), n_features=1))
    wins = feed(w, "s", [0, 1, 1, 0.5, 2], [0, 1, 99, 99, 2])
    assert [x.values[:, 0].tolist() for x in wins] == [[0, 1, 2]]
    assert w.dropped == {"duplicate": 1, "out_of_order": 1}


def test_gap_resets_the_window_and_flags_the_next_one() -> None:
    w = Windower(WindowingConfig(cutter=FixedCutter(5, 5), n_features=1, gap_factor=5))
    ts = [0, 1, 2, 3, 4, 5, 6, 100, 101, 102, 103, 104]
    wins = feed(w, "s", ts, ts)
    assert wins[0].timestamps.tolist() == [0, 1, 2, 3, 4] and wins[0].quality == ()
    assert wins[1].timestamps.tolist() == [100, 101, 102, 103, 104]
    assert wins[1].quality == ("gap_reset",)
    assert w.dropped["gap_reset"] == 2  # samples 5 and 6 never formed a window


def test_series_are_independent_and_width_is_checked() -> None:
    w = Windower(WindowingConfig(cutter=FixedCutter(2, 2), n_features=1))
    assert feed(w, "a", [0], [1]) == [] and feed(w, "b", [0], [2]) == []
    assert len(feed(w, "a", [1], [1])) == 1
    with pytest.raises(WrongWidthError, match="features") as caught:
        w.add("c", 0, 0, np.array([0.0]), np.array([[1.0, 2.0]]))
    assert isinstance(caught.value, DataError)  # still a data error for callers catching those


def test_bounded_memory_idle_eviction_and_series_cap() -> None:
    clock = FakeClock()
    w = Windower(
        WindowingConfig(cutter=FixedCutter(10, 10), n_features=1, idle_timeout_s=60, max_series=3),
        clock=clock,
    )
    for i, sid in enumerate("abc"):
        feed(w, sid, [0, 1], [0, 0], first_offset=10 * i)
    clock.now = 30
    feed(w, "c", [2], [0], first_offset=22)
    feed(w, "d", [0], [0], first_offset=30)  # cap: evicts "a", the least recently updated
    assert len(w) == 3 and w.dropped["evicted_series_cap"] == 2
    clock.now = 75
    assert w.evict_idle() == 1  # "b" idle since 0; "c" and "d" seen at 30
    assert w.dropped["evicted_idle"] == 2 and len(w) == 2
    assert w.pending_offsets() == {0: 20}


def test_partition_revocation_forgets_state() -> None:
    w = Windower(WindowingConfig(cutter=FixedCutter(5, 5), n_features=1))
    feed(w, "a", [0, 1], [0, 0], partition=0)
    feed(w, "b", [0, 1], [0, 0], partition=1, first_offset=7)
    assert w.forget_partitions([0]) == 1
    assert w.pending_offsets() == {1: 7}


def test_microbatcher_flushes_on_size_and_linger() -> None:
    clock = FakeClock()
    w = Windower(WindowingConfig(cutter=FixedCutter(2, 2), n_features=1))
    b = MicroBatcher(max_windows=3, linger_s=0.5, clock=clock)
    b.add(feed(w, "s", [0, 1, 2, 3], [0, 0, 0, 0]))
    assert len(b) == 2 and not b.ready()
    clock.now = 0.6
    assert b.ready()
    b.add(feed(w, "s", [4, 5, 6, 7], [0, 0, 0, 0], first_offset=4))
    assert b.pending_offsets() == {0: 0}
    assert [x.first_offset for _, x in b.take()] == [0, 2, 4]
    assert len(b) == 1 and b.pending_offsets() == {0: 6}


def test_offsets_never_pass_buffered_or_unpublished_samples() -> None:
    t = OffsetTracker()
    for off in range(10):
        t.consumed(0, off)
    t.consumed(1, 3)
    assert t.committable({0: 4}, {0: 6}) == {0: 4, 1: 4}
    t.mark_committed({0: 4, 1: 4})
    assert t.committable({0: 4}) == {}  # nothing moved
    assert t.committable() == {0: 10}
    t.forget_partitions([0])
    assert t.committable() == {}
