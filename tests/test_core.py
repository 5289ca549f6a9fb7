"""The streaming core driven with in-memory records and a fake model (no Kafka)."""

from __future__ import annotations

import json

from worker.stream.core import CoreOptions, InRecord, StreamCore
from worker.stream.envelopes import ERROR_HEADER
from worker.stream.messages import AnomalyRecord
from worker.stream.testing import FakeModel


def sample(sid: str, t: float, v: float, partition: int = 0, offset: int = 0) -> InRecord:
    body = json.dumps({"series_id": sid, "timestamp": t, "value": v}).encode()
    return InRecord("ts.raw", partition, offset, sid.encode(), body)


def chunk(sid: str, start: float, values: list[float], offset: int, partition: int = 0) -> InRecord:
    body = json.dumps({"series_id": sid, "start": start, "interval": 1, "values": values}).encode()
    return InRecord("ts.raw", partition, offset, sid.encode(), body)


def records(out: list) -> list[AnomalyRecord]:  # type: ignore[type-arg]
    return [AnomalyRecord.model_validate_json(r.value) for r in out if r.topic == "ts.anomalies"]


def test_windows_are_scored_into_schema_valid_records() -> None:
    core = StreamCore(FakeModel(), CoreOptions(max_windows=2, linger_s=10))
    assert core.ingest([chunk("a", 0, [1, 2, 3, 4, 0, 0, 0, 9, 1], offset=0)]) == []
    assert core.ready()
    out = records(core.score_batch())
    assert [r.energy for r in out] == [4.0, 9.0]
    assert [r.anomalous for r in out] == [False, True]
    assert out[1].segments[1].anomalous and not out[1].segments[0].anomalous
    assert out[1].window.start == 4.0 and out[1].window.end == 7.0
    assert out[1].source is not None and out[1].source.first_offset == 0
    assert out[0].id != out[1].id and out[0].model.version == 1


def test_record_ids_are_deterministic_across_replays() -> None:
    def run() -> list[str]:
        core = StreamCore(FakeModel(), CoreOptions(max_windows=10, linger_s=0))
        core.ingest([chunk("a", 100, [1, 2, 3, 4], offset=5)])
        return [r.id for r in records(core.score_batch())]

    assert run() == run()


def test_bad_records_go_to_the_dead_letter_topic_with_reasons() -> None:
    core = StreamCore(FakeModel(), CoreOptions(max_windows=10, linger_s=0))
    bad = [
        InRecord("ts.raw", 0, 0, b"a", b"not json"),
        InRecord("ts.raw", 0, 1, b"a", None),
        InRecord("ts.raw", 0, 2, b"a", b'{"series_id": "a", "timestamp": 1, "value": NaN}'),
        InRecord("ts.raw", 0, 3, b"a", b'{"series_id": "a", "timestamp": 1, "value": [1, 2]}'),
    ]
    dead = core.ingest(bad)
    assert len(dead) == 4 and all(d.topic == "ts.raw.dlq" for d in dead)
    assert dead[0].value == b"not json"  # original bytes preserved
    reasons = [dict(d.headers)[ERROR_HEADER].decode() for d in dead]
    assert "JSON" in reasons[0] and "empty" in reasons[1] and "non-finite" in reasons[2]
    assert "features" in reasons[3]
    assert dict(dead[0].headers)["seq2gmm.source.offset"] == b"0"
    assert core.dead_letters == {"invalid_message": 3, "wrong_width": 1}
    assert core.committable() == {0: 4}  # dead letters are handled once published


def test_dead_letter_kind_follows_the_error_type_not_its_wording() -> None:
    core = StreamCore(FakeModel(), CoreOptions(max_windows=10, linger_s=0))
    named_features = b'{"series_id": "a", "timestamp": 1, "value": 1, "features": 2}'
    dead = core.ingest([InRecord("ts.raw", 0, 0, b"a", named_features)])
    assert "features" in dict(dead[0].headers)[ERROR_HEADER].decode()  # an unknown field
    assert core.dead_letters == {"invalid_message": 1}


def test_offsets_wait_for_incomplete_and_unpublished_windows() -> None:
    core = StreamCore(FakeModel(), CoreOptions(max_windows=10, linger_s=60))
    core.ingest([sample("a", t, 1.0, offset=t) for t in range(6)])
    assert core.committable() == {0: 0}  # window [0..3] queued, not yet published
    core.score_batch()
    assert core.committable() == {0: 4}  # samples 4, 5 still wait in the buffer
    core.mark_committed({0: 4})
    assert core.committable() == {}


def test_only_anomalous_and_samples_options() -> None:
    core = StreamCore(
        FakeModel(),
        CoreOptions(max_windows=10, linger_s=0, only_anomalous=True, include_samples=True),
    )
    core.ingest([chunk("a", 0, [1, 1, 1, 1, 8, 1, 1, 1], offset=0)])
    out = records(core.score_batch())
    assert len(out) == 1 and out[0].energy == 8.0
    assert out[0].samples == [[8.0], [1.0], [1.0], [1.0]]
    assert core.counters["scored"] == 2 and core.counters["anomalous"] == 1


def test_an_unscorable_window_is_dead_lettered_and_the_rest_scored() -> None:
    core = StreamCore(FakeModel(unscorable=999), CoreOptions(max_windows=10, linger_s=0))
    core.ingest([chunk("a", 0, [1, 1, 1, 1, 999, 1, 1, 1, 2, 2, 2, 2], offset=0)])
    out = core.score_batch()
    assert [r.energy for r in records(out)] == [1.0, 2.0]
    dead = [r for r in out if r.topic == "ts.raw.dlq"]
    assert len(dead) == 1 and b"scoring failed" in dict(dead[0].headers)[ERROR_HEADER]
    assert json.loads(dead[0].value)["values"][0] == [999.0]


def test_one_microbatch_across_series_and_partitions() -> None:
    model = FakeModel()
    core = StreamCore(model, CoreOptions(max_windows=3, linger_s=60))
    core.ingest([chunk(s, 0, [1, 2, 3, 4], offset=i, partition=i % 2) for i, s in enumerate("abc")])
    assert core.ready()
    assert len(records(core.score_batch())) == 3 and model.calls == [3]


def test_model_swap_between_batches_and_geometry_change_rewinds() -> None:
    core = StreamCore(FakeModel(version=1), CoreOptions(max_windows=10, linger_s=0))
    core.ingest([chunk("a", 0, [1, 2, 3, 4, 5, 6], offset=0), chunk("a", 6, [7], offset=1)])
    assert core.swap_model(FakeModel(version=2)) == {}  # same geometry: nothing to replay
    assert {r.model.version for r in records(core.score_batch())} == {2}
    rewind = core.swap_model(FakeModel(version=3, length=6, hop=6))
    assert rewind == {0: 0}  # offset 0 still has samples 4, 5 buffered
    assert core.windower.buffered_samples() == 0 and len(core.batcher) == 0
