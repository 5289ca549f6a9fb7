"""In-memory stand-ins for what the streaming worker talks to, for tests without a broker.

After bytewax's testing sources and sinks: :class:`FakeConsumer` and :class:`FakeProducer`
implement the subset of kafka-python's KafkaConsumer / KafkaProducer that
:class:`~worker.stream.kafka_loop.StreamWorker` uses, :class:`FakeModel` is a
:class:`~worker.stream.served.ServedModel` and :class:`FakeModels` a model source whose
promotions a test schedules; :class:`CrossingCutter` cuts cycles of varying length (upward
threshold crossings) for tests of the cycle interface. The clients share one :class:`CallLog`,
so a test can assert the order of calls across both (every send flushed before the commit that
passes its input).

Kafka behaviour kept on purpose: a send's future completes only at ``flush``; a rebalance
happens inside ``poll`` (the listener hears of it there) with the eager protocol by default
(every partition revoked, then the new set assigned; a partition kept across it keeps its
fetch position); paused partitions are not fetched; a new partition starts at its committed
offset, else at ``auto_offset_reset``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from kafka import ConsumerRebalanceListener, TopicPartition

from model.cycles import Cutter, Cycle, FixedCutter
from model.errors import DataError
from worker.stream.kafka_loop import Clients
from worker.stream.served import ScoredWindow, SegmentScore


@dataclass(frozen=True)
class Call:
    client: str  # "consumer", "producer", "group" (rebalance events) or "models"
    method: str
    args: tuple[Any, ...] = ()


@dataclass
class CallLog:
    """Every call made on the fakes sharing this log, in order."""

    calls: list[Call] = field(default_factory=list)

    def record(self, client: str, method: str, *args: Any) -> None:
        self.calls.append(Call(client, method, args))

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    def indices(self, method: str) -> list[int]:
        return [i for i, c in enumerate(self.calls) if c.method == method]


@dataclass(frozen=True)
class FakeRecord:
    """A consumed or produced record (the attributes of kafka-python's records the worker reads)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class FakeConsumer:
    """One topic's partitions in memory, consumed as one member of a consumer group."""

    def __init__(
        self,
        topic: str,
        partitions: int = 1,
        calls: CallLog | None = None,
        max_poll_records: int = 500,
        protocol: Literal["eager", "cooperative"] = "eager",
        auto_offset_reset: Literal["earliest", "latest"] = "earliest",
        max_polls: int = 10_000,
        end_lag: int = 0,
    ) -> None:
        self.topic = topic
        self.end_lag = end_lag  # how far end_offsets (ListOffsets) lags the log end
        self.log: dict[int, list[FakeRecord]] = {p: [] for p in range(partitions)}
        self.calls = calls if calls is not None else CallLog()
        self.max_poll_records = max_poll_records
        self.protocol = protocol
        self.auto_offset_reset = auto_offset_reset
        self.max_polls = max_polls
        self.committed_offsets: dict[int, int] = {}
        self.commit_error: BaseException | None = None  # raised (once) by the next commit
        self.polls = 0
        self.closed = False
        self._listener: ConsumerRebalanceListener | None = None
        self._positions: dict[int, int] = {}  # of the assigned partitions
        self._paused: set[int] = set()
        self._fetched: set[int] = set()  # partitions a poll fetched from (highwater known)
        self._next_assignment: set[int] | None = None
        self._hooks: dict[int, list[Callable[[], None]]] = {}

    # ------------------------------------------------------------------ test controls
    def append(self, partition: int, key: bytes | None, value: bytes | None) -> int:
        """Produce one record to the input topic; returns its offset."""
        offset = len(self.log[partition])
        self.log[partition].append(FakeRecord(self.topic, partition, offset, key, value))
        return offset

    def rebalance(self, assigned: Iterable[int]) -> None:
        """The group gives this member ``assigned`` at the next poll."""
        self._next_assignment = set(assigned)

    def at_poll(self, n: int, action: Callable[[], None]) -> None:
        """Run ``action`` at the start of the ``n``-th poll (1-based), before it fetches."""
        self._hooks.setdefault(n, []).append(action)

    # ------------------------------------------------------------------ KafkaConsumer
    def subscribe(
        self, topics: list[str], listener: ConsumerRebalanceListener | None = None
    ) -> None:
        if list(topics) != [self.topic]:
            raise ValueError(f"this fake holds topic {self.topic!r} only, not {topics}")
        self.calls.record("consumer", "subscribe", tuple(topics))
        self._listener = listener
        self._next_assignment = set(self.log)  # the group assigns at the first poll

    def poll(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[FakeRecord]]:
        self.polls += 1
        if self.polls > self.max_polls:
            raise RuntimeError(f"polled more than {self.max_polls} times: the loop never stops")
        for action in self._hooks.pop(self.polls, []):
            action()
        if self._next_assignment is not None:
            self._rebalance(self._next_assignment)
            self._next_assignment = None
        out: dict[TopicPartition, list[FakeRecord]] = {}
        budget = min(max_records or self.max_poll_records, self.max_poll_records)
        for p in sorted(set(self._positions) - self._paused):
            self._fetched.add(p)
            batch = self.log[p][self._positions[p] : self._positions[p] + budget]
            if batch:
                out[self._tp(p)] = batch
                self._positions[p] += len(batch)
                budget -= len(batch)
        self.calls.record("consumer", "poll", {tp.partition: len(b) for tp, b in out.items()})
        return out

    def assignment(self) -> set[TopicPartition]:
        return {self._tp(p) for p in self._positions}

    def paused(self) -> set[TopicPartition]:
        return {self._tp(p) for p in self._paused}

    def pause(self, *partitions: TopicPartition) -> None:
        self.calls.record("consumer", "pause", *sorted(self._assigned(partitions)))
        self._paused.update(tp.partition for tp in partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.calls.record("consumer", "resume", *sorted(self._assigned(partitions)))
        self._paused.difference_update(tp.partition for tp in partitions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        (p,) = self._assigned([partition])
        self.calls.record("consumer", "seek", p, offset)
        self._positions[p] = offset

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for p in self._assigned(partitions):
            self.calls.record("consumer", "seek_to_beginning", p)
            self._positions[p] = 0

    def committed(self, partition: TopicPartition) -> int | None:
        return self.committed_offsets.get(partition.partition)

    def position(self, partition: TopicPartition) -> int:
        (p,) = self._assigned([partition])
        return self._positions[p]

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """ListOffsets' answer: ``end_lag`` records short of the log end (as tansu's can be)."""
        return {tp: max(0, len(self.log[tp.partition]) - self.end_lag) for tp in partitions}

    def highwater(self, partition: TopicPartition) -> int | None:
        """The high watermark of the latest fetch: the log end once the partition was fetched."""
        return len(self.log[partition.partition]) if partition.partition in self._fetched else None

    def commit(self, offsets: Mapping[TopicPartition, Any]) -> None:
        plain = {tp.partition: meta.offset for tp, meta in offsets.items()}
        self.calls.record("consumer", "commit", plain)
        if self.commit_error is not None:
            error, self.commit_error = self.commit_error, None
            raise error
        self.committed_offsets.update(plain)

    def close(self, autocommit: bool = True) -> None:
        self.calls.record("consumer", "close", autocommit)
        self.closed = True

    # ------------------------------------------------------------------ internals
    def _tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    def _assigned(self, partitions: Iterable[TopicPartition]) -> list[int]:
        parts = [tp.partition for tp in partitions]
        if any(p not in self._positions for p in parts):
            raise ValueError(f"partitions {parts} are not all assigned ({sorted(self._positions)})")
        return parts

    def _rebalance(self, new: set[int]) -> None:
        old = set(self._positions)
        revoked = old if self.protocol == "eager" else old - new
        if revoked or self.protocol == "eager":
            self.calls.record("group", "revoked", *sorted(revoked))
            if self._listener is not None:
                self._listener.on_partitions_revoked([self._tp(p) for p in sorted(revoked)])
        for p in old - new:
            del self._positions[p]
            self._paused.discard(p)
        for p in new - old:
            start = 0 if self.auto_offset_reset == "earliest" else len(self.log[p])
            self._positions[p] = self.committed_offsets.get(p, start)
        assigned = new if self.protocol == "eager" else new - old
        self.calls.record("group", "assigned", *sorted(assigned))
        if self._listener is not None:
            self._listener.on_partitions_assigned([self._tp(p) for p in sorted(assigned)])


def fake_clients(consumer: FakeConsumer, producer: FakeProducer) -> Clients:
    """The ``clients`` argument of StreamWorker that hands it these fakes."""
    return lambda: (consumer, producer)


class FakeFuture:
    """A send's result: done only once the producer is flushed."""

    def __init__(self) -> None:
        self.is_done = False
        self.exception: BaseException | None = None

    def failed(self) -> bool:
        return self.is_done and self.exception is not None

    def succeeded(self) -> bool:
        return self.is_done and self.exception is None


class FakeProducer:
    """Records sends; ``flush`` acknowledges them, or fails those ``fail`` names.

    Produced records carry the partition they were sent to (else 0) and their send order as
    offset."""

    def __init__(
        self,
        calls: CallLog | None = None,
        fail: Callable[[FakeRecord], BaseException | None] | None = None,
    ) -> None:
        self.calls = calls if calls is not None else CallLog()
        self.fail = fail  # per record: the delivery error, or None to deliver it
        self.flush_error: BaseException | None = None  # raised by flush (e.g. a timeout)
        self.sent: list[FakeRecord] = []
        self.delivered: list[FakeRecord] = []  # acknowledged, in send order
        self.closed = False
        self._unflushed: list[tuple[FakeRecord, FakeFuture]] = []

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> FakeFuture:
        record = FakeRecord(topic, partition or 0, len(self.sent), key, value, list(headers or []))
        self.calls.record("producer", "send", record)
        self.sent.append(record)
        future = FakeFuture()
        self._unflushed.append((record, future))
        return future

    def flush(self, timeout: float | None = None) -> None:
        self.calls.record("producer", "flush")
        if self.flush_error is not None:
            raise self.flush_error
        for record, future in self._unflushed:
            future.exception = self.fail(record) if self.fail is not None else None
            future.is_done = True
            if future.exception is None:
                self.delivered.append(record)
        self._unflushed.clear()

    def close(self, timeout: float | None = None) -> None:
        self.calls.record("producer", "close")
        self.closed = True


class FakeModel:
    """A ServedModel: energy = max |value| over two half-window segments.

    It cuts fixed windows of (``length``, ``hop``) unless given a ``cutter``; windows containing
    ``unscorable`` raise DataError (a model refusing a window); ``scored`` keeps every window
    it scored, in order. With a ``gate``, each batch waits until the gate is set (a slow model
    whose batches a test finishes at a chosen moment); ``fail_with`` is raised by every batch
    (a bug in a model, not a refused window).
    """

    def __init__(
        self,
        version: int = 1,
        length: int = 4,
        hop: int = 4,
        threshold: float = 5.0,
        n_features: int = 1,
        unscorable: float | None = None,
        name: str = "fake",
        cutter: Cutter | None = None,
        gate: threading.Event | None = None,
        fail_with: BaseException | None = None,
    ) -> None:
        self.name, self.version = name, version
        self.gate, self.fail_with = gate, fail_with
        self.cutter: Cutter = cutter if cutter is not None else FixedCutter(length, hop)
        self.n_features = n_features
        self.threshold = threshold
        self.unscorable = unscorable
        self.calls: list[int] = []  # batch sizes scored
        self.scored: list[np.ndarray] = []

    def score(self, windows: Sequence[np.ndarray]) -> list[ScoredWindow]:
        if self.gate is not None:
            self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        self.calls.append(len(windows))
        out = []
        for w in windows:
            if self.unscorable is not None and np.any(w == self.unscorable):
                raise DataError(f"cannot score {self.unscorable}")
            h = len(w) // 2
            segs = (
                SegmentScore(0, h, float(np.abs(w[: h + 1]).max())),
                SegmentScore(h, len(w) - 1, float(np.abs(w[h:]).max())),
            )
            out.append(ScoredWindow(max(s.energy for s in segs), 50.0, segs))
        self.scored += [np.array(w) for w in windows]  # only batches that scored
        return out


class FakeModels:
    """A model source (the registry's role): serves ``model``; :meth:`promote` queues a new one
    that the worker's next ``poll`` receives."""

    def __init__(self, model: FakeModel | None, calls: CallLog | None = None) -> None:
        self.model = model
        self.calls = calls if calls is not None else CallLog()
        self._promoted: FakeModel | None = None

    def promote(self, model: FakeModel) -> None:
        self._promoted = model

    def current(self) -> FakeModel | None:
        return self.model

    def poll(self) -> FakeModel | None:
        new, self._promoted = self._promoted, None
        if new is not None:
            self.model = new
            self.calls.record("models", "promoted", new.version)
        return new


@dataclass(frozen=True)
class CrossingCutter:
    """A :class:`~model.cycles.Cutter` for tests: a cycle runs from ``lead`` samples before one
    upward crossing of ``level`` (by the first feature) to ``lead`` samples before the next, so
    cycles vary in length and keep samples from before their cutting point; a cycle reaching
    ``max_length`` samples without a crossing is returned flagged ``no_crossing``."""

    level: float = 0.0
    lead: int = 2
    max_length: int = 64
    kind = "crossing"

    def stream(self) -> _CrossingStream:
        return _CrossingStream(self)

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "level": self.level, "lead": self.lead, "max": self.max_length}


class _CrossingStream:
    def __init__(self, cutter: CrossingCutter) -> None:
        self.cutter = cutter
        self.seen = 0
        self.prev: float | None = None
        self.start: int | None = None  # where the cycle in progress starts

    @property
    def keep_from(self) -> int:
        return max(0, self.seen - self.cutter.lead) if self.start is None else self.start

    def push(self, timestamps: np.ndarray, values: np.ndarray) -> list[Cycle]:
        c, out = self.cutter, []
        for v in values[:, 0].tolist():
            i, crossed = self.seen, self.prev is not None and self.prev < c.level <= v
            self.seen, self.prev = i + 1, v
            if not crossed and self.start is not None and i - c.lead - self.start >= c.max_length:
                out.append(Cycle(self.start, self.start + c.max_length, ("no_crossing",)))
                self.start += c.max_length
            if crossed and i >= c.lead:
                if self.start is not None:
                    out.append(Cycle(self.start, i - c.lead))
                self.start = i - c.lead
        return out
