"""A stream checkpoint: publish a batch's records -> flush the producer -> commit the offsets.

This is the step that makes the worker at-least-once (the idea of quix-streams' checkpoint),
kept in one small object so the order cannot be broken by an edit to the poll loop and can be
tested alone:

1. :meth:`StreamCheckpoint.publish` sends the output records (anomalies, dead letters) and keeps
   their delivery futures;
2. :meth:`StreamCheckpoint.commit` flushes the producer, and raises if any record failed:
   nothing is committed then, so the input is processed again after a restart;
3. only after a successful flush does it ask for the offsets to commit, and commits them.

Not to be confused with :mod:`model.checkpoint` (a trained model on disk).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import structlog
from kafka import TopicPartition
from kafka.errors import CommitFailedError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata

from worker.errors import ServiceError
from worker.stream.core import OutRecord

log = structlog.get_logger()


class SendFuture(Protocol):
    """What the checkpoint reads of a send's result once the producer is flushed."""

    exception: Any

    def failed(self) -> bool: ...


class Producer(Protocol):
    """The part of kafka-python's KafkaProducer the checkpoint uses."""

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> SendFuture: ...

    def flush(self, timeout: float | None = None) -> None: ...


class OffsetCommitter(Protocol):
    """The part of kafka-python's KafkaConsumer the checkpoint uses."""

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None: ...


class StreamCheckpoint:
    """Records published since the last commit, and the one way to commit past them."""

    def __init__(
        self,
        producer: Producer,
        consumer: OffsetCommitter,
        topic: str,
        on_published: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``topic``: the input topic whose offsets are committed; ``on_published`` gets each
        flushed record's end-to-end latency (from its window's ``ready_at``) in seconds."""
        self.producer = producer
        self.consumer = consumer
        self.topic = topic
        self._on_published = on_published
        self._clock = clock
        self._futures: list[SendFuture] = []
        self._ready_times: list[float] = []  # of published windows awaiting the flush

    @property
    def pending(self) -> int:
        """Records sent since the last flush."""
        return len(self._futures)

    def publish(self, records: Iterable[OutRecord]) -> None:
        for r in records:
            if r.ready_at is not None:
                self._ready_times.append(r.ready_at)
            self._futures.append(
                self.producer.send(
                    r.topic,
                    key=r.key,
                    value=r.value,
                    headers=r.headers or None,
                    partition=r.to_partition,
                )
            )

    def commit(self, offsets: Callable[[], Mapping[int, int]]) -> dict[int, int]:
        """Flush what was published, then commit ``offsets()`` (partition -> next offset).

        ``offsets`` is called only after the flush succeeded, so it can never name a record
        whose output is still unacknowledged. Returns what was committed: ``{}`` when there
        was nothing to commit, or when a rebalance refused the commit (the partitions' new
        owner re-reads from the last successful commit: at-least-once). Raises ServiceError,
        committing nothing, when a record could not be published.
        """
        self._flush()
        to_commit = dict(offsets())
        if not to_commit:
            return {}
        try:
            self.consumer.commit(
                {
                    TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                    for p, o in to_commit.items()
                }
            )
        except (CommitFailedError, RebalanceInProgressError) as exc:
            # a rebalance took partitions away meanwhile: their new owner re-reads from
            # the last successful commit (at-least-once); ours are committed next time
            log.warning("commit_failed_rebalance", error=str(exc))
            return {}
        return to_commit

    def _flush(self) -> None:
        if not self._futures:
            return
        self.producer.flush()
        failed = [f for f in self._futures if f.failed()]
        self._futures.clear()
        if self._on_published is not None:
            published = self._clock()
            for t in self._ready_times:
                self._on_published(published - t)
        self._ready_times.clear()
        if failed:
            raise ServiceError(
                f"{len(failed)} records could not be published ({failed[0].exception});"
                " offsets were not committed, so they will be processed again on restart"
            )
