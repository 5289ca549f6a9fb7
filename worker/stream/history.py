"""Read a topic's history between two times, without a consumer group.

Training from the stream (``train --from-topic``), backtests (``backtest --topic``) and the
model comparisons read what a topic holds between ``since`` and ``until``: the first offset of
each partition at ``since`` comes from the broker's time index (``offsets_for_times``), and each
partition is read up to the log end seen when the read began, so a busy topic still ends. No
group is joined and nothing is committed: reading history never moves a worker's position.

The log end of a partition is the larger of the broker's ListOffsets answer and the high
watermark of the first fetch (the embedded broker's ListOffsets can lag the log end).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka import KafkaConsumer, TopicPartition

from worker.errors import ConfigError, ServiceError
from worker.ops.settings import KafkaSettings
from worker.stream.core import InRecord
from worker.stream.kafka_clients import make_consumer

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


class HistoryError(ServiceError):
    """The topic's history cannot be read (unknown topic, broker unreachable, timeout)."""


@dataclass(frozen=True)
class HistoryRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None

    def in_record(self) -> InRecord:
        """The record as the streaming core takes it."""
        return InRecord(self.topic, self.partition, self.offset, self.key, self.value)


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``36h``, ``7d`` or ``2w``."""
    m = _DURATION.match(text)
    if m is None:
        raise ConfigError(
            f"cannot read the duration {text!r}: write a number and a unit, one of s m h d w"
            " (e.g. 7d, 36h, 15m)"
        )
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_time_ms(text: str, now_s: float | None = None) -> int:
    """Epoch milliseconds of ``text``: a duration ago (``7d``) or an ISO-8601 time (UTC when it
    names no zone)."""
    now = time.time() if now_s is None else now_s
    if _DURATION.match(text):
        return int((now - parse_duration(text)) * 1000)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"cannot read the time {text!r}: give a duration ago (7d, 36h) or an ISO-8601"
            " time (2026-12-01T08:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def read_history(
    bootstrap: str,
    kafka: KafkaSettings,
    topic: str,
    since_ms: int,
    until_ms: int | None = None,
    *,
    timeout_s: float = 120.0,
) -> Iterator[HistoryRecord]:
    """The records of ``topic`` with ``since_ms <= timestamp < until_ms``, partition after
    partition, in offset order within each."""
    if until_ms is not None and until_ms <= since_ms:
        raise ConfigError("the end of the time range must come after its start")
    consumer = make_consumer(bootstrap, kafka, group_id=None, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise HistoryError(f"topic {topic!r} does not exist on {bootstrap}; check its name")
        for p in sorted(parts):
            yield from _read_partition(
                consumer, TopicPartition(topic, p), since_ms, until_ms, timeout_s
            )
    finally:
        consumer.close()


def _read_partition(
    c: KafkaConsumer,
    tp: TopicPartition,
    since_ms: int,
    until_ms: int | None,
    timeout_s: float,
) -> Iterator[HistoryRecord]:
    start = c.offsets_for_times({tp: since_ms}).get(tp)
    end = int(c.end_offsets([tp])[tp])
    if start is None:  # no record at or after since_ms
        return
    c.assign([tp])
    c.seek(tp, start.offset)
    position, first_fetch = start.offset, True
    deadline = time.monotonic() + timeout_s
    while position < end:
        if time.monotonic() > deadline:
            raise HistoryError(
                f"timed out reading {tp.topic}[{tp.partition}] at offset {position} of {end}"
                f" within {timeout_s:.0f} s; is the broker reachable?"
            )
        batch = c.poll(timeout_ms=500).get(tp, [])
        if batch and first_fetch:  # ListOffsets may lag; the fetch's high watermark does not
            end = max(end, int(c.highwater(tp) or 0))
            first_fetch = False
        for msg in batch:
            if msg.offset >= end:
                return
            position = msg.offset + 1
            if until_ms is not None and msg.timestamp >= until_ms:
                continue
            if msg.timestamp < since_ms:
                continue
            yield HistoryRecord(
                tp.topic, tp.partition, msg.offset, msg.timestamp, msg.key, msg.value
            )
