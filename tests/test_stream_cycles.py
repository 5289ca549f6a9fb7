"""Cycles in the stream: a continuous series is cut into the same variable-length windows by
the streaming core (whatever the message boundaries, and across a restart from committed
offsets) as by :func:`model.cycles.cut` offline, each scored once."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.cycles import Cutter, FixedCutter, cut, cycle_windows
from worker.stream.core import CoreOptions, InRecord, OutRecord, StreamCore
from worker.stream.messages import AnomalyRecord
from worker.stream.testing import CrossingCutter, FakeModel

T0 = 1_700_000_000.0  # integer seconds: timestamps survive JSON and chunk arithmetic exactly
CUTTER = CrossingCutter(level=0.0, lead=3, max_length=48)


def continuous_series(n_cycles: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One sine cycle after another with lengths of 20..40 samples, a little noise, and one
    flat stretch longer than ``max_length`` (a missed cycle)."""
    rng = np.random.default_rng(seed)
    parts = [np.sin(2 * np.pi * np.arange(n) / n) for n in rng.integers(20, 41, n_cycles)]
    parts.insert(n_cycles // 2, np.full(40, -0.5))
    x = np.concatenate(parts) + 0.01 * rng.standard_normal(sum(len(p) for p in parts))
    return T0 + np.arange(len(x), dtype=np.float64), x


def single_samples(t: np.ndarray, x: np.ndarray, sid: str = "ecg") -> list[InRecord]:
    return [
        InRecord(
            "ts.raw",
            0,
            i,
            sid.encode(),
            json.dumps({"series_id": sid, "timestamp": ti, "value": xi}).encode(),
        )
        for i, (ti, xi) in enumerate(zip(t.tolist(), x.tolist(), strict=True))
    ]


def random_chunks(t: np.ndarray, x: np.ndarray, seed: int, sid: str = "ecg") -> list[InRecord]:
    rng = np.random.default_rng(seed)
    cuts = np.unique(rng.integers(1, len(x), size=len(x) // 7))
    out = []
    for i, (lo, hi) in enumerate(zip([0, *cuts.tolist()], [*cuts.tolist(), len(x)], strict=True)):
        body = {"series_id": sid, "start": t[lo], "interval": 1.0, "values": x[lo:hi].tolist()}
        out.append(InRecord("ts.raw", 0, i, sid.encode(), json.dumps(body).encode()))
    return out


def stream(core: StreamCore, records: list[InRecord]) -> list[AnomalyRecord]:
    """Feed records one by one, publishing every batch as soon as it is ready."""
    out: list[OutRecord] = []
    for rec in records:
        assert core.ingest([rec]) == []
        while core.ready():
            out += core.score_batch()
    return [AnomalyRecord.model_validate_json(r.value) for r in out]


def assert_same_windows(scored: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(scored) == len(expected)
    for got, want in zip(scored, expected, strict=True):
        np.testing.assert_array_equal(got, want.reshape(len(want), -1))


def offline(cutter: Cutter, t: np.ndarray, x: np.ndarray) -> list[np.ndarray]:
    return cycle_windows(x, cut(cutter, x, t))


def test_the_test_series_has_cycles_of_varying_length_and_a_flagged_one() -> None:
    t, x = continuous_series()
    cycles = cut(CUTTER, x, t)
    lengths = {len(c) for c in cycles}
    # 40 sine cycles: 39 crossings after the first, 38 cycles between them, one of which
    # (through the flat stretch) is longer than max_length and gives a flagged piece
    assert len(cycles) == 39 and min(lengths) < 25 and max(lengths) > 35
    assert [c.quality for c in cycles].count(("no_crossing",)) == 1


@pytest.mark.parametrize("chunking", ["single", "chunks-1", "chunks-2"])
def test_streamed_cycles_equal_the_offline_cut(chunking: str) -> None:
    t, x = continuous_series()
    if chunking == "single":
        records = single_samples(t, x)
    else:
        records = random_chunks(t, x, seed=int(chunking[-1]))
    model = FakeModel(cutter=CUTTER)
    core = StreamCore(model, CoreOptions(max_windows=5, linger_s=0))
    published = stream(core, records)
    cycles = cut(CUTTER, x, t)
    assert_same_windows(model.scored, cycle_windows(x, cycles))  # each once, in order
    assert [(r.window.start, r.window.end, r.window.n_samples) for r in published] == [
        (t[c.start], t[c.end - 1], len(c)) for c in cycles
    ]
    assert [tuple(r.quality) for r in published] == [c.quality for c in cycles]
    # committed up to exactly the record holding the first sample a next cycle may contain
    tail = CUTTER.stream()
    tail.push(t, x[:, None])
    sizes = [len(json.loads(r.value or b"").get("values", [0])) for r in records]
    holder = int(np.searchsorted(np.cumsum(sizes), tail.keep_from, side="right"))
    assert core.committable_positions() == {0: holder}


def test_a_restart_from_committed_offsets_scores_every_remaining_cycle_once() -> None:
    t, x = continuous_series()
    records = single_samples(t, x)
    first = FakeModel(cutter=CUTTER)
    core = StreamCore(first, CoreOptions(max_windows=3, linger_s=0))
    half = len(records) // 2
    stream(core, records[:half])
    resume = core.committable_positions()[0]  # everything before it is published
    second = FakeModel(cutter=CUTTER)
    stream(StreamCore(second, CoreOptions(max_windows=3, linger_s=0)), records[resume:])
    assert_same_windows(first.scored + second.scored, offline(CUTTER, t, x))


def test_fixed_cutter_in_the_core_equals_the_offline_fixed_windows() -> None:
    t, x = continuous_series(n_cycles=10)
    cutter = FixedCutter(16, 12)
    model = FakeModel(cutter=cutter)
    stream(StreamCore(model, CoreOptions(max_windows=4, linger_s=0)), random_chunks(t, x, 3))
    assert_same_windows(model.scored, offline(cutter, t, x))


def test_swapping_to_a_model_with_another_cutter_rewinds_and_recuts() -> None:
    t, x = continuous_series(n_cycles=10)
    records = single_samples(t, x)
    core = StreamCore(FakeModel(length=16, hop=16), CoreOptions(max_windows=100, linger_s=60))
    stream(core, records[:100])
    assert len(core.batcher) == 6  # six fixed windows queued, four samples buffered
    assert core.swap_model(FakeModel(version=2, cutter=CUTTER)) == {0: 0}  # nothing published
    assert core.swap_model(FakeModel(version=3, cutter=CUTTER)) == {}  # same cutter
    crossing = FakeModel(version=4, cutter=CUTTER)
    core.swap_model(crossing)
    core.batcher.linger_s = 0
    stream(core, records)  # the caller re-reads from the rewound position
    assert_same_windows(crossing.scored, offline(CUTTER, t, x))
