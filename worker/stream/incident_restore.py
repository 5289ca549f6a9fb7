"""Read ``ts.incidents`` back when input partitions are assigned: the topic is its own changelog.

The worker publishes each incident record to the partition *number* its windows came from on
``ts.raw`` (the incidents topic has as many partitions), so the incident state of the series of
input partition ``p`` is the tail of ``ts.incidents[p]``. On assignment the loop reads that
partition from ``offsets_for_times(now - lookback)`` to its end (no consumer group, nothing
committed; a few records per series with an incident), and
:meth:`~worker.stream.incidents.IncidentTracker.restore` continues the open ones. Why there and
not in Redis: the state then moves with the partition and is exactly as durable as the records
the consumers saw; nothing but Kafka is touched, and only on assignment, never in the hot path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from pydantic import ValidationError

from worker.errors import ServiceError
from worker.ops.settings import KafkaSettings
from worker.stream.incident_record import IncidentRecord
from worker.stream.kafka_clients import make_consumer

if TYPE_CHECKING:
    from worker.stream.core_api import Core

log = structlog.get_logger()

#: a poll's wait while reading back: short, so the loop sees a partition reach its end (its high
#: watermark arrives with a fetch response) soon after, instead of when a long poll times out
#: (200 ms: every assignment's read-back took 205 ms on an empty topic, now ~60 ms)
POLL_MS = 20


class IncidentHistory:
    """``history(partitions)``: the incident records of those partitions since
    ``now - lookback_s`` (record timestamps, wall clock), in topic order per partition."""

    def __init__(
        self,
        bootstrap: str,
        kafka: KafkaSettings,
        topic: str,
        lookback_s: float,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bootstrap, self.kafka, self.topic = bootstrap, kafka, topic
        self.lookback_s, self.timeout_s, self._clock = lookback_s, timeout_s, clock

    def __call__(self, partitions: list[int]) -> list[IncidentRecord]:
        if not partitions:
            return []
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer = make_consumer(
            self.bootstrap, self.kafka, group_id=None, enable_auto_commit=False
        )
        try:
            consumer.assign(tps)
            since_ms = int((self._clock() - self.lookback_s) * 1000)
            found = consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
            ends = consumer.end_offsets(tps)
            for tp in tps:  # None: no record since then (start at the end)
                at = found.get(tp)
                consumer.seek(tp, at.offset if at is not None else ends[tp])
            return self._read(consumer, tps, ends)
        finally:
            consumer.close()

    def _read(
        self, consumer: KafkaConsumer, tps: list[TopicPartition], ends: dict[TopicPartition, int]
    ) -> list[IncidentRecord]:
        """Poll until every partition's position reached its end: the larger of ListOffsets'
        answer and the high watermark of a fetch (a broker's ListOffsets can lag the log end;
        see kafka_loop._log_ends)."""
        out: list[IncidentRecord] = []
        bad = 0
        deadline = time.monotonic() + self.timeout_s
        while True:
            pending = [tp for tp in tps if not _at_end(consumer, tp, ends[tp])]
            if not pending:
                break
            if time.monotonic() > deadline:
                log.warning(
                    "incident_restore_incomplete",
                    partitions=[tp.partition for tp in pending],
                    hint="an incident open before the restart may be opened again",
                )
                break
            for batch in consumer.poll(timeout_ms=POLL_MS).values():
                for msg in batch:
                    try:
                        out.append(IncidentRecord.model_validate_json(msg.value))
                    except ValidationError:
                        bad += 1
        if bad:
            log.warning("incident_records_unreadable", records=bad, topic=self.topic)
        return out


def _at_end(consumer: KafkaConsumer, tp: TopicPartition, end: int) -> bool:
    high = consumer.highwater(tp)
    return high is not None and bool(consumer.position(tp) >= max(end, high))


def restore_partitions(
    history: Callable[[list[int]], list[IncidentRecord]], core: Core, partitions: list[int]
) -> None:
    """Give ``core`` the incident state of newly assigned ``partitions``. A failed read is
    logged and the worker serves on (at worst an incident open before is opened again)."""
    started = time.monotonic()
    try:
        records = history(partitions)
    except (ServiceError, KafkaError) as exc:
        log.warning("incident_restore_failed", partitions=partitions, error=str(exc))
        return
    restored = core.restore_incidents(records)
    log.info(
        "incidents_restored",
        partitions=partitions,
        records=len(records),
        open=restored,
        seconds=round(time.monotonic() - started, 3),
    )
