"""Windowing many samples per call: one ``Windower.add`` per series run, with per-sample source
offsets, gives exactly what feeding the samples one record at a time through the per-sample
path gives (windows, dropped counters, pending offsets), for every kind of cutter and for
messy streams (duplicates, out-of-order samples, gaps, a series moving partition)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from model.cycles import Cutter, Cycle, FixedCutter, PeriodCutter, fit_fiducial
from model.errors import DataError
from model.evaluation.synthetic import SyntheticConfig, generate
from worker.stream.core import CoreOptions, InRecord, StreamCore
from worker.stream.envelopes import ERROR_HEADER
from worker.stream.messages import AnomalyRecord
from worker.stream.testing import CrossingCutter, FakeModel
from worker.stream.windowing import Window, Windower, WindowingConfig

T0 = 1_700_000_000.0
N_FEATURES = 2


@dataclass(frozen=True)
class Rec:
    series_id: str
    partition: int
    offset: int
    timestamps: np.ndarray
    values: np.ndarray


class PerSampleWindower(Windower):
    """The reference: every sample through the per-sample path (the median of the recent
    intervals computed for each one), never the run-at-once fast path."""

    def _accept_all(self, s: Any, t: np.ndarray) -> bool:
        return False


def signal(seed: int, n: int) -> np.ndarray:
    """(n, N_FEATURES) quasi-periodic samples (cycles of about 32 samples) plus noise."""
    (s,) = generate(
        SyntheticConfig(n_series=1, n_cycles=n // 24 + 1, period=32, period_jitter=0.15, seed=seed)
    )
    x = s.values.reshape(len(s.values), -1)[:n, 0]
    noise = np.random.default_rng(seed).standard_normal(len(x))
    return np.column_stack([x, noise])


def messy_series(rng: np.random.Generator, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps about 1 s apart (jittered) with duplicates, out-of-order samples and gaps."""
    x = signal(seed, n)
    t, shift = [], 0.0
    for i in range(len(x)):
        base = T0 + i + 0.3 * rng.uniform(-1, 1) + shift
        u = rng.uniform()
        if u < 0.01 and t:
            shift += 40.0  # a gap: later samples 40 intervals on
            base += 40.0
        elif u < 0.03 and t:
            base = t[-1]  # a duplicate timestamp
        elif u < 0.05 and t:
            base = t[-1] - 0.5  # out of order
        t.append(base)
    return np.array(t), x


def messy_records(seed: int, n_series: int = 3, n: int = 500, max_chunk: int = 4) -> list[Rec]:
    """The series' samples in records of 1..max_chunk samples, interleaved at random (each
    series in order); series ``s0`` moves from partition 0 to 1 halfway (a re-keyed topic)."""
    rng = np.random.default_rng(seed)
    per_series: list[list[tuple[str, int, np.ndarray, np.ndarray]]] = []
    for k in range(n_series):
        t, x = messy_series(rng, seed + k, n)
        cuts = np.cumsum(rng.integers(1, max_chunk + 1, size=n))
        cuts = cuts[cuts < len(t)].tolist()
        bounds = list(zip([0, *cuts], [*cuts, len(t)], strict=True))
        part = [
            ((k % 2) if k or i < len(bounds) // 2 else 1, lo, hi)
            for i, (lo, hi) in enumerate(bounds)
        ]
        per_series.append([(f"s{k}", p, t[lo:hi], x[lo:hi]) for p, lo, hi in part])
    out: list[Rec] = []
    next_offset: dict[int, int] = defaultdict(int)
    while any(per_series):
        k = int(rng.choice([i for i, rs in enumerate(per_series) if rs]))
        sid, p, t, x = per_series[k].pop(0)
        out.append(Rec(sid, p, next_offset[p], t, x))
        next_offset[p] += 1
    return out


def crossing() -> Cutter:
    return CrossingCutter(level=0.0, lead=3, max_length=48)


def fiducial() -> Cutter:
    return fit_fiducial([signal(100, 2000)[:, 0]])


CUTTERS = {
    "fixed": lambda: FixedCutter(8, 8),
    "fixed-hop-over-length": lambda: FixedCutter(5, 9),
    "fixed-overlapping": lambda: FixedCutter(12, 4),
    "crossing": crossing,
    "period": lambda: PeriodCutter(30.0, 1.0),
    "fiducial": fiducial,
}


def windower(cutter: Cutter, cls: type[Windower] = Windower, **kw: Any) -> Windower:
    return cls(WindowingConfig(cutter=cutter, n_features=N_FEATURES, **kw))


def key(w: Window) -> tuple[Any, ...]:
    assert w.timestamps.dtype == np.float64 and w.values.dtype == np.float64
    assert w.values.shape == (len(w.timestamps), N_FEATURES)
    return (
        w.series_id,
        w.partition,
        w.timestamps.tolist(),
        w.values.tolist(),
        w.first_offset,
        w.last_offset,
        w.quality,
    )


def by_series(windows: list[Window]) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for w in windows:
        out[w.series_id].append(key(w))
    return dict(out)


def state(w: Windower) -> tuple[Any, ...]:
    return dict(w.dropped), w.pending_offsets(), w.buffered_samples(), len(w)


def scanned_pending(w: Windower) -> dict[int, int]:
    """pending_offsets by definition: per partition, the least first buffered offset."""
    out: dict[int, int] = {}
    for s in w._series.values():
        if len(s.buffer):
            first = int(s.buffer.offsets[s.buffer.head])
            out[s.partition] = min(first, out.get(s.partition, first))
    return out


def one_by_one(w: Windower, recs: list[Rec]) -> list[Window]:
    out: list[Window] = []
    for r in recs:
        out += w.add(r.series_id, r.partition, r.offset, r.timestamps, r.values)
    return out


def grouped(w: Windower, recs: list[Rec]) -> list[Window]:
    """One add per run of a series' records from one partition, as StreamCore.ingest does."""
    runs: dict[str, list[Rec]] = {}
    for r in recs:
        runs[r.series_id] = [*runs.pop(r.series_id, []), r]
    out: list[Window] = []
    for sid, rs in runs.items():
        i = 0
        while i < len(rs):
            j = i + 1
            while j < len(rs) and rs[j].partition == rs[i].partition:
                j += 1
            run = rs[i:j]
            offsets = np.repeat([r.offset for r in run], [len(r.timestamps) for r in run])
            ts = np.concatenate([r.timestamps for r in run])
            out += w.add(
                sid, run[0].partition, offsets, ts, np.concatenate([r.values for r in run])
            )
            i = j
    return out


@pytest.mark.parametrize("name", sorted(CUTTERS))
@pytest.mark.parametrize("seed", [0, 1])
def test_runs_of_records_window_exactly_like_records_one_by_one(name: str, seed: int) -> None:
    recs = messy_records(seed)
    reference = windower(CUTTERS[name](), PerSampleWindower)
    single, polled = windower(CUTTERS[name]()), windower(CUTTERS[name]())
    rng = np.random.default_rng(seed)
    want: list[Window] = []
    got_single: list[Window] = []
    got_polled: list[Window] = []
    i = 0
    while i < len(recs):  # polls of 1..60 records
        poll = recs[i : i + int(rng.integers(1, 61))]
        i += len(poll)
        want += one_by_one(reference, poll)
        got_single += one_by_one(single, poll)
        got_polled += grouped(polled, poll)
        assert state(single) == state(reference) == state(polled)
        assert reference.pending_offsets() == scanned_pending(reference)
    assert by_series(got_single) == by_series(want) == by_series(got_polled)
    assert single.windows_emitted == polled.windows_emitted == len(want)
    # the stream exercises what it is meant to
    drops = reference.dropped
    assert drops["duplicate"] and drops["out_of_order"] and drops["gap_reset"], drops
    assert len(want) > 10 and any("gap_reset" in w.quality for w in want)


@pytest.mark.parametrize("name", sorted(CUTTERS))
@pytest.mark.parametrize("gap_factor", [5.0, 0.0])
def test_each_series_at_once_windows_like_one_by_one(name: str, gap_factor: float) -> None:
    """Runs of hundreds of samples (the vectorised interval check) in one call."""
    recs = messy_records(seed=2, max_chunk=1)
    reference = windower(CUTTERS[name](), PerSampleWindower, gap_factor=gap_factor)
    whole = windower(CUTTERS[name](), gap_factor=gap_factor)
    want = one_by_one(reference, recs)
    got: list[Window] = []
    for sid in sorted({r.series_id for r in recs}):
        got += grouped(whole, [r for r in recs if r.series_id == sid])
    assert by_series(got) == by_series(want)
    assert state(whole)[:3] == state(reference)[:3]


def test_regular_streams_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jittered sampling within the gap factor never needs the per-sample median."""

    def per_sample(*args: Any) -> list[Window]:
        raise AssertionError("the per-sample path was taken")

    w = windower(FixedCutter(10, 10))
    monkeypatch.setattr(w, "_add_each", per_sample)
    rng = np.random.default_rng(0)
    t = T0 + np.cumsum(rng.uniform(0.7, 1.3, size=400))
    x = signal(0, 400)
    wins = one_by_one(w, [Rec("a", 0, i, t[i : i + 1], x[i : i + 1]) for i in range(200)])
    wins += w.add("a", 0, np.arange(200, 400), t[200:], x[200:])
    assert len(wins) == 40 and [v.first_offset for v in wins[:3]] == [0, 10, 20]


@pytest.mark.parametrize(
    ("times", "gap_factor"),
    [
        ([0, 1, 2, 50], 5.0),  # two intervals only: no median yet, never a gap
        ([0, 1, 2, 3, 50], 5.0),  # three: a gap
        ([0, 1, 2, 3, 4.9, 9.8], 5.0),  # right at 5 x the median: not a gap
        ([0, 1, 2, 3, 8.01], 5.0),  # just over it
        ([0, 1, 3, 4, 6, 7, 20], 5.0),  # median 1.5 (even count), 13 > 7.5
        ([0, 2, 3, 5, 6, 8, 15], 5.0),  # median 2 > the least interval 1: 7 <= 10
        ([0, 1, 2, 3, 500], 0.0),  # gap detection off
        ([0, 1, 2, 3, 4, 5], 0.5),  # a factor under 1: every interval is a gap
        ([*range(40), 39, *range(40, 80)], 0.0),  # a duplicate in a long run (numpy check)
        ([*range(40), 39, *range(40, 80)], 5.0),
        ([*range(40), 38.5, *range(40, 80)], 0.0),  # out of order in a long run
    ],
)
def test_gap_decisions_at_the_edges(times: list[float], gap_factor: float) -> None:
    t = np.array(times, dtype=np.float64)
    x = np.zeros((len(t), N_FEATURES))
    cfg = {"gap_factor": gap_factor}
    reference = windower(FixedCutter(2, 2), PerSampleWindower, **cfg)
    want = one_by_one(
        reference, [Rec("a", 0, i, t[i : i + 1], x[i : i + 1]) for i in range(len(t))]
    )
    for split in range(len(t)):  # the first samples one by one, the rest in one call
        w = windower(FixedCutter(2, 2), **cfg)
        got = one_by_one(w, [Rec("a", 0, i, t[i : i + 1], x[i : i + 1]) for i in range(split)])
        got += w.add("a", 0, np.arange(split, len(t)), t[split:], x[split:])
        assert [key(v) for v in got] == [key(v) for v in want]
        assert state(w) == state(reference)


def test_offsets_are_per_sample_or_one_for_all() -> None:
    w = windower(FixedCutter(3, 3))
    t, x = np.arange(7.0), np.arange(14.0).reshape(7, 2)
    wins = w.add("a", 4, np.array([10, 10, 11, 12, 12, 12, 13]), t, x)
    assert [(v.first_offset, v.last_offset) for v in wins] == [(10, 11), (12, 12)]
    assert w.pending_offsets() == {4: 13}
    assert [v.first_offset for v in w.add("a", 4, np.int64(20), t + 7, x)] == [13, 20]
    with pytest.raises(DataError, match="source offsets"):
        w.add("a", 4, np.array([1, 2]), t + 14, x)
    with pytest.raises(DataError, match="timestamps for"):
        w.add("a", 4, 30, t[:3] + 14, x)


def test_pending_offsets_follow_evictions_revocations_and_heap_rebuilds() -> None:
    """The per-partition heaps agree with a scan of every buffer through series moving
    partition, cap and idle evictions, revoked partitions and the rebuild of stale heaps."""
    now = [0.0]
    w = Windower(
        WindowingConfig(FixedCutter(3, 2), N_FEATURES, idle_timeout_s=50, max_series=40),
        clock=lambda: now[0],
    )
    rng = np.random.default_rng(3)
    offsets: dict[int, int] = defaultdict(int)
    last_t: dict[str, float] = defaultdict(float)
    rebuilds = 0
    for step in range(6000):
        now[0] = step / 10
        sid = f"s{int(rng.integers(0, 60))}"
        partition = int(rng.integers(0, 3)) if rng.uniform() < 0.02 else int(sid[1:]) % 3
        n = int(rng.integers(1, 4))
        t = last_t[sid] + np.arange(1, n + 1, dtype=np.float64)
        last_t[sid] = float(t[-1])
        entries = w._pending_entries
        w.add(sid, partition, offsets[partition], t, np.zeros((n, N_FEATURES)))
        offsets[partition] += 1
        if w._pending_entries < entries:  # rebuilt from the series
            rebuilds += 1
            assert w.pending_offsets() == scanned_pending(w)
        if step % 500 == 499:
            w.evict_idle()
        if step == 3000:
            w.forget_partitions([2])
        if step % 7 == 0 and step < 3000:  # later, stale entries pile up until a rebuild
            assert w.pending_offsets() == scanned_pending(w)
        assert w._pending_entries <= 4 * len(w) + 1025
    assert w.dropped["evicted_series_cap"] and w.dropped["partition_moved"] and rebuilds
    assert w.pending_offsets() == scanned_pending(w)


# ---------------------------------------------------------------- StreamCore.ingest


def raw(r: Rec) -> InRecord:
    """The single-sample JSON record of a one-sample ``r``."""
    assert len(r.timestamps) == 1
    body = {"series_id": r.series_id, "timestamp": r.timestamps[0], "value": r.values[0].tolist()}
    return InRecord(
        "ts.raw", r.partition, r.offset, r.series_id.encode(), json.dumps(body).encode()
    )


def core_records(seed: int) -> list[InRecord]:
    """Messy single-sample records, one chunk record, one undecodable and one too wide."""
    recs = [raw(r) for r in messy_records(seed, max_chunk=1)]
    chunk = {"series_id": "c", "start": T0, "interval": 1.0, "values": [[1.0, 2.0]] * 9}
    recs.insert(40, InRecord("ts.raw", 0, recs[39].offset, b"c", json.dumps(chunk).encode()))
    recs.insert(70, InRecord("ts.raw", 0, recs[69].offset, b"s0", b"not json"))
    wide = {"series_id": "s1", "timestamp": T0 + 7.5, "value": [1.0, 2.0, 3.0]}
    recs.insert(90, InRecord("ts.raw", 1, recs[89].offset, b"s1", json.dumps(wide).encode()))
    return recs


def published(core: StreamCore) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    while len(core.batcher):
        for r in core.score_batch():
            a = AnomalyRecord.model_validate_json(r.value)
            assert a.source is not None
            src = (a.source.partition, a.source.first_offset, a.source.last_offset)
            out[a.series_id].append((a.id, a.window, a.energy, src, a.quality))
    return dict(out)


def dead_letters(out: list[Any]) -> list[tuple[str, bytes]]:
    return [(dict(d.headers)["seq2gmm.source.offset"], dict(d.headers)[ERROR_HEADER]) for d in out]


@pytest.mark.parametrize("cutter", ["fixed", "crossing"])
def test_ingest_of_polls_equals_ingest_of_records_one_by_one(cutter: str) -> None:
    recs = core_records(seed=4)
    options = CoreOptions(max_windows=10_000, linger_s=3600)
    one = StreamCore(FakeModel(cutter=CUTTERS[cutter](), n_features=N_FEATURES), options)
    polled = StreamCore(FakeModel(cutter=CUTTERS[cutter](), n_features=N_FEATURES), options)
    rng = np.random.default_rng(0)
    dead_one, dead_polled = [], []
    i = 0
    while i < len(recs):
        poll = recs[i : i + int(rng.integers(1, 120))]
        i += len(poll)
        for rec in poll:
            dead_one += dead_letters(one.ingest([rec]))
        dead_polled += dead_letters(polled.ingest(poll))
        assert polled.committable_positions() == one.committable_positions()
        assert polled.counters == one.counters and polled.dead_letters == one.dead_letters
        assert polled.windower.dropped == one.windower.dropped
    assert dead_polled == dead_one and len(dead_one) == 2
    assert polled.dead_letters == {"invalid_message": 1, "wrong_width": 1}
    assert published(polled) == published(one)


class FailingCutter:
    """A cutter whose streams refuse every push (a model that cannot cut these series)."""

    kind = "failing"
    max_length = 4

    def stream(self) -> FailingCutter:
        return self

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind}

    keep_from = 0

    def push(self, timestamps: np.ndarray, values: np.ndarray) -> list[Cycle]:
        raise DataError("this cutter cannot cut these samples")


def test_a_run_the_cutter_refuses_dead_letters_each_of_its_records() -> None:
    """The windower fails on a whole run: each of its records is dead-lettered (even one
    whose samples were dropped as duplicates), with the cutter's reason."""
    core = StreamCore(FakeModel(cutter=FailingCutter(), n_features=N_FEATURES), CoreOptions())
    recs = [raw(r) for r in messy_records(5, n_series=2, n=6, max_chunk=1)]
    dead = core.ingest(recs)
    assert sorted(d[0] for d in dead_letters(dead)) == sorted(str(r.offset).encode() for r in recs)
    assert all(b"cannot cut" in reason for _, reason in dead_letters(dead))
    assert core.dead_letters == {"invalid_message": len(recs)}


def test_the_room_of_a_large_message_is_given_back() -> None:
    w = windower(FixedCutter(10, 10))
    n = 10_005
    w.add("a", 0, 1, T0 + np.arange(n, dtype=np.float64), np.zeros((n, N_FEATURES)))
    buffer = w._series["a"].buffer
    assert len(buffer) == 5 and len(buffer.ts) <= 4 * (10 + 16)
    for i in range(200):  # then one-sample messages: the room stays small
        w.add("a", 0, 2 + i, np.array([T0 + n + i]), np.zeros((1, N_FEATURES)))
    assert len(w._series["a"].buffer.ts) <= 4 * (10 + 16)
