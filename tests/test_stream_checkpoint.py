"""StreamCheckpoint alone: publish -> flush -> commit, in that order, or no commit at all."""

from __future__ import annotations

import pytest
from kafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError

from worker.errors import ServiceError
from worker.stream.checkpoint import StreamCheckpoint
from worker.stream.core import OutRecord
from worker.stream.testing import CallLog, FakeConsumer, FakeProducer

TOPIC = "ts.raw"


def setup(
    producer: FakeProducer | None = None,
) -> tuple[StreamCheckpoint, FakeConsumer, FakeProducer, CallLog, list[float]]:
    calls = CallLog()
    consumer = FakeConsumer(TOPIC, partitions=2, calls=calls)
    producer = producer or FakeProducer(calls)
    producer.calls = calls
    latencies: list[float] = []
    clock = iter([10.0, 20.0, 30.0])
    checkpoint = StreamCheckpoint(
        producer, consumer, TOPIC, latencies.append, clock=lambda: next(clock)
    )
    return checkpoint, consumer, producer, calls, latencies


def out(n: int, ready_at: float | None = None) -> list[OutRecord]:
    return [OutRecord("ts.anomalies", b"k", f"r{i}".encode(), ready_at=ready_at) for i in range(n)]


def test_offsets_are_asked_after_the_flush_and_committed_after_it() -> None:
    checkpoint, consumer, producer, calls, latencies = setup()
    checkpoint.publish(out(2, ready_at=7.5))
    assert checkpoint.pending == 2 and producer.delivered == []

    def offsets() -> dict[int, int]:
        calls.record("test", "offsets_asked")
        return {0: 3, 1: 5}

    assert checkpoint.commit(offsets) == {0: 3, 1: 5}
    assert calls.methods() == ["send", "send", "flush", "offsets_asked", "commit"]
    assert consumer.committed_offsets == {0: 3, 1: 5}
    assert [r.value for r in producer.delivered] == [b"r0", b"r1"]
    assert checkpoint.pending == 0 and latencies == [2.5, 2.5]  # flushed at clock 10.0


def test_a_failed_record_commits_nothing_and_says_so() -> None:
    producer = FakeProducer(fail=lambda r: KafkaError("broker down") if r.value == b"r1" else None)
    checkpoint, consumer, _, calls, _ = setup(producer)
    checkpoint.publish(out(3))
    asked: list[int] = []
    with pytest.raises(ServiceError, match=r"1 records could not be published \(.*broker down"):
        checkpoint.commit(lambda: asked.append(1) or {0: 3})
    assert asked == [] and "commit" not in calls.methods()
    assert consumer.committed_offsets == {}
    assert checkpoint.pending == 0  # the failed batch is not retried by the next commit


def test_a_flush_that_raises_commits_nothing() -> None:
    checkpoint, consumer, producer, calls, _ = setup()
    producer.flush_error = KafkaTimeoutError("flush timed out")
    checkpoint.publish(out(1))
    with pytest.raises(KafkaTimeoutError):
        checkpoint.commit(lambda: {0: 1})
    assert "commit" not in calls.methods() and consumer.committed_offsets == {}


def test_nothing_published_commits_without_flushing_and_nothing_to_commit_skips() -> None:
    checkpoint, consumer, _, calls, _ = setup()
    assert checkpoint.commit(lambda: {1: 4}) == {1: 4}
    assert checkpoint.commit(dict) == {}
    assert calls.methods() == ["commit"] and consumer.committed_offsets == {1: 4}


def test_a_commit_refused_by_a_rebalance_is_not_an_error_but_commits_nothing() -> None:
    checkpoint, consumer, _, _, _ = setup()
    consumer.commit_error = CommitFailedError("group rebalanced")
    checkpoint.publish(out(1))
    assert checkpoint.commit(lambda: {0: 1}) == {}
    assert consumer.committed_offsets == {}
    assert checkpoint.commit(lambda: {0: 1}) == {0: 1}  # the next one goes through
