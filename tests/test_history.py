"""Reading a topic's history by time (no consumer group): the parsing of times and durations,
and a read of the real embedded broker by timestamp range."""

from __future__ import annotations

import pytest
from kafka import KafkaProducer

from worker.errors import ConfigError
from worker.ops.settings import KafkaSettings
from worker.stream.history import HistoryError, parse_duration, parse_time_ms, read_history
from worker.stream.topics import ensure_topics


def test_durations_and_times() -> None:
    assert parse_duration("90s") == 90.0
    assert parse_duration("15m") == 900.0
    assert parse_duration("1.5h") == 5400.0
    assert parse_duration("7d") == 7 * 86_400.0
    assert parse_duration("2w") == 14 * 86_400.0
    assert parse_time_ms("1d", now_s=100_000.0) == (100_000 - 86_400) * 1000
    assert parse_time_ms("2026-12-01T00:00:00Z") == 1_796_083_200_000
    assert parse_time_ms("2026-12-01T00:00:00") == 1_796_083_200_000  # UTC when no zone
    for bad in ("7 days", "", "-3h", "yesterday"):
        with pytest.raises(ConfigError):
            parse_time_ms(bad)


def test_reads_a_time_range_of_every_partition(services, unique: str) -> None:  # type: ignore[no-untyped-def]
    kafka = KafkaSettings(num_partitions=3)
    topic = f"hist-{unique}"
    ensure_topics(services.kafka_bootstrap, kafka, [topic])
    producer = KafkaProducer(bootstrap_servers=services.kafka_bootstrap)
    base = 1_700_000_000_000
    for i in range(60):  # timestamps base, base+1000, ...; partition i % 3
        producer.send(
            topic, f"v{i}".encode(), key=b"k", partition=i % 3, timestamp_ms=base + i * 1000
        )
    producer.flush()
    producer.close()

    got = list(read_history(services.kafka_bootstrap, kafka, topic, base + 10_000, base + 40_000))
    assert sorted(r.value for r in got) == sorted(f"v{i}".encode() for i in range(10, 40))
    for p in range(3):  # offset order within each partition
        offs = [r.offset for r in got if r.partition == p]
        assert offs == sorted(offs) and len(offs) == 10
    assert all(base + 10_000 <= r.timestamp_ms < base + 40_000 for r in got)
    everything = list(read_history(services.kafka_bootstrap, kafka, topic, 0))
    assert len(everything) == 60
    assert everything[0].in_record().topic == topic
    assert list(read_history(services.kafka_bootstrap, kafka, topic, base + 61_000)) == []
    with pytest.raises(HistoryError, match="does not exist"):
        list(read_history(services.kafka_bootstrap, kafka, f"missing-{unique}", 0))
    with pytest.raises(ConfigError):
        list(read_history(services.kafka_bootstrap, kafka, topic, 10, 5))
