"""The thin Kafka loop around :class:`~worker.stream.core.StreamCore`.

poll ``ts.raw`` -> core.ingest -> score ready microbatches (on the scoring thread of
:mod:`~worker.stream.scoring`, while the loop polls on) -> publish their records to
``ts.anomalies`` / the dead-letter topic -> flush the producer -> commit offsets (in that order,
so a crash at any point loses nothing: at-least-once;
:class:`~worker.stream.checkpoint.StreamCheckpoint` owns the last three steps). The model is
swapped between batches, never inside one.

The Kafka clients come from ``clients`` (default: :mod:`~worker.stream.kafka_clients`), so
tests drive the loop with the in-memory fakes of :mod:`worker.stream.testing`.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

import structlog
from kafka import ConsumerRebalanceListener, TopicPartition

from worker.errors import ServiceError
from worker.ops.drift import DriftMonitor
from worker.ops.heap import freeze_startup_heap
from worker.ops.http_server import Health
from worker.ops.settings import Settings
from worker.ops.telemetry import WorkerMetrics
from worker.stream.checkpoint import OffsetCommitter, Producer, StreamCheckpoint
from worker.stream.core import Batch, CoreOptions, InRecord, StreamCore
from worker.stream.core_api import Core
from worker.stream.incident_record import IncidentRecord
from worker.stream.incident_restore import IncidentHistory, restore_partitions
from worker.stream.kafka_clients import make_consumer, make_producer
from worker.stream.scoring import InlineScoring, Scoring, ThreadedScoring
from worker.stream.served import ServedModel
from worker.stream.shadow import ShadowSource

log = structlog.get_logger()

EVICT_EVERY_S = 30.0  # also how often the worker_stats line is logged
COMMIT_EVERY_S = 1.0
OBSERVE_EVERY_S = 5.0  # consumer lag and assignment for metrics and /readyz
# poll timeout while a batch is being scored: its records wait at most this long to be
# published; shorter polls would take the interpreter from the scoring thread more often
IN_FLIGHT_POLL_MS = 50
# ... and while paused, a poll at least this often all the same, so a batch that scores for
# longer than max_poll_interval_ms never makes the group drop this member
PAUSED_POLL_S = 1.0


class ModelSource(Protocol):
    """Where the served model comes from (the Redis registry in production)."""

    def current(self) -> ServedModel | None:
        """The model to serve now, or None while there is none."""
        ...

    def poll(self) -> ServedModel | None:
        """A newly promoted model (already loaded and verified), or None when unchanged."""
        ...


class Consumer(OffsetCommitter, Protocol):
    """The part of kafka-python's KafkaConsumer the loop uses."""

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None: ...
    def poll(self, timeout_ms: int, max_records: int | None) -> Mapping[TopicPartition, Any]: ...
    def assignment(self) -> set[TopicPartition]: ...
    def paused(self) -> set[TopicPartition]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    def seek_to_beginning(self, *partitions: TopicPartition) -> None: ...
    def committed(self, partition: TopicPartition) -> int | None: ...
    def position(self, partition: TopicPartition) -> int: ...
    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...
    def close(self, autocommit: bool = True) -> None: ...


class ClosingProducer(Producer, Protocol):
    def close(self) -> None: ...


Clients = Callable[[], tuple[Consumer, ClosingProducer]]  # called once, when the loop starts
# the incident records of the given input partitions' series, read back from ts.incidents
History = Callable[[list[int]], list[IncidentRecord]]


MAX_SWAPS_PER_LOOK = 64  # models taken from the source between two polls, at most


@dataclass
class RunLimits:
    max_records: int | None = None  # stop after consuming this many records
    idle_timeout_s: float | None = None  # stop after this long without records
    model_wait_s: float | None = None  # give up waiting for an active model
    stop_at_end: bool = False  # stop once every assigned partition is consumed to its end
    # ... and has stayed so this long: a broker's high watermark can lag its log end (tansu's
    # does), so one look at the end offsets can stop a worker with records still to come
    at_end_settle_s: float = 1.0


class StreamWorker:
    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        models: ModelSource,
        options: CoreOptions,
        limits: RunLimits | None = None,
        metrics: WorkerMetrics | None = None,
        health: Health | None = None,
        clients: Clients | None = None,
        core_factory: Callable[[CoreOptions], Core] | None = None,
        shadow: ShadowSource | None = None,
        incident_history: History | None = None,
    ) -> None:
        self.settings = settings
        self._core_factory = core_factory
        self.metrics = metrics
        self.health = health
        self.bootstrap = bootstrap
        self.models = models
        self.options = options
        self.limits = limits or RunLimits()
        self._clients = clients or self._connect
        self._history = incident_history
        self._assigned: set[int] = set()  # assigned since the loop last looked (under the lock)
        self._stopping = False
        self.core: Core | None = None
        self._paused = False
        self._revoked: set[int] = set()
        self._revoked_lock = threading.Lock()
        self._at_end_since: float | None = None  # when _caught_up first held (stop_at_end)
        self._polled_at = 0.0  # when the consumer was last polled
        self.shadow_models = shadow  # the second alias's model (worker.stream.shadow)
        self.drift = DriftMonitor(settings.worker.drift_window_s)

    def _connect(self) -> tuple[Consumer, ClosingProducer]:
        producer = make_producer(self.bootstrap, self.settings.kafka)
        return make_consumer(self.bootstrap, self.settings.kafka), producer

    # ------------------------------------------------------------------ lifecycle
    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        if not self._stopping:
            log.info("worker_stopping", signal=signum)
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def _wait_for_model(self) -> ServedModel | None:
        start = time.monotonic()
        announced = False
        while not self._stopping:
            if self.health is not None:
                self.health.tick()
            model = self.models.current()
            if model is not None:
                return model
            if not announced:
                log.warning("no_active_model", hint="publish and promote one: seq2gmm models")
                announced = True
            waited = time.monotonic() - start
            if self.limits.model_wait_s is not None and waited > self.limits.model_wait_s:
                raise ServiceError("no active model appeared; promote one with `seq2gmm models`")
            time.sleep(0.5)
        return None

    def run(self) -> dict[str, Any]:
        """Serve until stopped. A routed worker (``core_factory``) starts at once, its models
        arriving as series route to them; otherwise the worker waits for its model first."""
        if self._core_factory is not None:
            self.core = self._core_factory(self.options)
            log.info("serving_routes")
        else:
            model = self._wait_for_model()
            if model is None:
                return {}
            self.core = StreamCore(model, self.options)
            self._announce_model(model)
            log.info(
                "serving_model",
                model=model.name,
                version=model.version,
                cycles=model.cutter.to_config(),
            )
        self.consumer, self.producer = self._clients()
        self.checkpoint = StreamCheckpoint(
            self.producer, self.consumer, self.options.raw_topic, self._observe_end_to_end
        )
        self.scoring = self._scoring(self.core)
        log.info("heap_frozen", **freeze_startup_heap())  # full collections skip start-up's objects
        self.consumer.subscribe([self.options.raw_topic], listener=_Rebalance(self))
        try:
            self._loop()
            self._drain()
        finally:
            self.scoring.close()
            self.consumer.close(autocommit=False)
            self.producer.close()
        return self.summary()

    def _scoring(self, core: Core) -> Scoring:
        if self.settings.batching.scoring != "inline":  # process: the thread waits on it
            # process: a second batch goes to the child while the first one's records are built
            # and published here (measured: docs/benchmarks.md, "Scoring in a process")
            in_flight = 2 if self.settings.batching.scoring == "process" else 1
            return ThreadedScoring(core.score, max_in_flight=in_flight)
        return InlineScoring(core.score)

    def summary(self) -> dict[str, Any]:
        return self.core.stats() if self.core is not None else {}

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        core = self.core
        assert core is not None
        last_record = last_commit = last_evict = time.monotonic()
        last_observe = 0.0
        while not self._stopping:
            self._maybe_swap_model()
            self._follow_shadow()
            polled = self._poll()
            revoked = self._apply_revocations()
            self._restore_incidents()
            now = time.monotonic()
            records = [
                InRecord(tp.topic, tp.partition, m.offset, m.key, m.value)
                for tp, batch in polled.items()
                if tp.partition not in revoked  # re-read from the committed offset instead
                for m in batch
            ]
            if records:
                last_record = now
            out = core.ingest(records)  # also a routed core's dead letters of a cold start
            if out:
                self.checkpoint.publish(out)
            self._score_and_publish()
            self._flow_control()
            if self.checkpoint.pending or now - last_commit > COMMIT_EVERY_S:
                self._flush_and_commit()
                last_commit = now
            if self.health is not None:
                self.health.tick()
            if now - last_observe > OBSERVE_EVERY_S:
                self._observe()
                last_observe = now
            if now - last_evict > EVICT_EVERY_S:
                core.windower.evict_idle()
                log.info("worker_stats", **core.stats())
                last_evict = now
            if self._limit_reached(now - last_record) or (
                self.limits.stop_at_end and not records and self._caught_up()
            ):
                break

    def _caught_up(self) -> bool:
        """True when partitions are assigned and each position has equalled its end offset at
        every look for ``at_end_settle_s`` (the end offsets are read again at each look)."""
        assigned = self.consumer.assignment()
        ends = self._log_ends(list(assigned))
        if not assigned or any(self.consumer.position(tp) < ends[tp] for tp in assigned):
            self._at_end_since = None
            return False
        now = time.monotonic()
        if self._at_end_since is None:
            self._at_end_since = now
        if now - self._at_end_since < self.limits.at_end_settle_s:
            return False
        log.info("caught_up", partitions=sorted(tp.partition for tp in assigned))
        return True

    def _log_ends(self, assigned: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Per partition, the best known end of its log: the larger of the ListOffsets answer
        and the high watermark of the latest fetch response. A broker's ListOffsets can lag
        the log end (the embedded tansu's does, by hundreds of records until later produces),
        so neither the lag metric nor ``--stop-at-end`` trusts it alone."""
        if not assigned:
            return {}
        ends = self.consumer.end_offsets(assigned)
        return {tp: max(ends[tp], self.consumer.highwater(tp) or 0) for tp in assigned}

    def _announce_model(self, model: ServedModel) -> None:
        if self.metrics is not None:
            self.metrics.model.info({"name": model.name, "version": str(model.version)})
        if self.health is not None:
            self.health.model = f"{model.name}:{model.version}"

    def _observe(self) -> None:
        """Lag per assigned partition (one ListOffsets request) for metrics and readiness."""
        assigned = list(self.consumer.assignment())
        lag: dict[int, int] = {}
        if assigned:
            ends = self._log_ends(assigned)
            lag = {tp.partition: max(0, ends[tp] - self.consumer.position(tp)) for tp in assigned}
        # GroupConsumer keeps the last known ends through a broker outage and says so
        broker_ok = bool(getattr(self.consumer, "broker_reachable", True))
        if self.metrics is not None:
            self.metrics.set_lag(lag)
            self.metrics.broker_reachable.set(1 if broker_ok else 0)
        if self.health is not None:
            self.health.assigned = len(assigned)
            self.health.broker_ok = broker_ok

    def _poll(self) -> Mapping[TopicPartition, Any]:
        """The next records. While fetching is paused and a batch is being scored there is
        nothing to fetch: wait for the batch instead (kafka-python heartbeats on its own
        thread), so this thread does not compete with scoring for the interpreter."""
        in_flight = self.scoring.in_flight()
        if self._paused and in_flight and time.monotonic() - self._polled_at < PAUSED_POLL_S:
            self.scoring.wait(IN_FLIGHT_POLL_MS / 1000)
            return {}
        timeout_ms = IN_FLIGHT_POLL_MS if in_flight else self._idle_poll_ms()
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=None)
        self._polled_at = time.monotonic()
        return polled

    def _idle_poll_ms(self) -> int:
        return 20 if self.core is not None and self.core.backlog() else 200

    def _score_and_publish(self) -> None:
        """Hand the next ready batch to scoring, then publish the batches scored since the last
        look: the scoring thread works on while this one publishes, flushes and commits. At
        most one batch per poll: with the flow control, the poll interval stays far inside
        max_poll_interval_ms."""
        assert self.core is not None
        done = self.scoring.done()
        if self.core.ready() and self.scoring.has_room():
            batch = self.core.take_batch()
            if batch is not None:
                self.scoring.submit(batch)
        self._publish(done + self.scoring.done())  # inline scoring is done at submission

    def _publish_scored(self) -> None:
        """Publish the records of the batches scored since the last look, oldest first."""
        self._publish(self.scoring.done())

    def _publish(self, batches: list[Batch]) -> None:
        assert self.core is not None
        for batch in batches:
            self.checkpoint.publish(self.core.complete(batch))
            if self.metrics is not None:
                self.metrics.batch_size.observe(len(batch.windows))
                self.metrics.batch_seconds.observe(batch.seconds)
            model = batch.model
            self.drift.observe(model.name, model.version, batch.percentiles, batch.flags)

    def _score_all(self) -> None:
        """Publish every complete window: the batches in flight, then the queued ones
        (scored here, the scoring thread being idle)."""
        assert self.core is not None
        while self.scoring.in_flight():
            self.scoring.wait(1.0)
            self._publish_scored()
        while self.core.backlog():
            self.checkpoint.publish(self.core.score_batch())

    def _limit_reached(self, idle_s: float) -> bool:
        lim = self.limits
        assert self.core is not None
        if lim.max_records is not None and self.core.counters["consumed"] >= lim.max_records:
            log.info("max_records_reached", consumed=self.core.counters["consumed"])
            return True
        if lim.idle_timeout_s is not None and idle_s >= lim.idle_timeout_s:
            log.info("idle_timeout", idle_s=round(idle_s, 1))
            return True
        return False

    def _flow_control(self) -> None:
        """Pause fetching while scoring falls behind; resume once the backlog is down."""
        assert self.core is not None
        backlog, size = self.core.backlog(), self.options.max_windows
        if not self._paused and backlog > 4 * size:
            self.consumer.pause(*self.consumer.assignment())
            self._paused = True
            log.info("paused_partitions", backlog=backlog)
        elif self._paused and backlog <= size:
            self.consumer.resume(*self.consumer.paused())
            self._paused = False
            log.info("resumed_partitions", backlog=backlog)

    def _maybe_swap_model(self) -> None:
        """Serve every version the source loaded since the last look (a routed source may
        have several models ready at once)."""
        assert self.core is not None
        for _ in range(MAX_SWAPS_PER_LOOK):
            try:
                new = self.models.poll()
            except Exception as exc:  # a bad version must never stop a serving worker
                log.error("model_reload_failed", error=str(exc))
                return
            if new is None:
                return
            if not self.core.serves(new):
                self._swap(new)

    def _swap(self, new: ServedModel) -> None:
        assert self.core is not None
        self._score_all()  # what the old model owes first, so no batch mixes versions
        self._flush_and_commit()
        rewind = self.core.swap_model(new)
        for partition, offset in rewind.items():
            self.consumer.seek(TopicPartition(self.options.raw_topic, partition), offset)
        self._announce_model(new)
        log.info("model_swapped", model=new.name, version=new.version, rewound=rewind)

    def _follow_shadow(self) -> None:
        """Score the next batches with the shadow alias's model as it is now (no I/O: the
        watcher loads in its own thread); None while the alias is unset."""
        if self.shadow_models is None or not isinstance(self.core, StreamCore):
            return  # a routed core has no shadow (refused at start)
        model = self.shadow_models.current()
        if model is self.core.shadow:
            return
        self.core.shadow = model
        version = "none" if model is None else str(model.version)
        if self.metrics is not None:
            self.metrics.shadow_model.info({"name": self.core.model.name, "version": version})
        log.info("shadow_model", model=self.core.model.name, version=version)

    def _drain(self) -> None:
        """On shutdown: score every complete window, publish (with the incidents' unpublished
        changes, so a successor restores them whole), flush, commit."""
        self._score_all()
        assert self.core is not None
        self.checkpoint.publish(self.core.pending_incident_updates())
        self._flush_and_commit()
        log.info("worker_stopped", **self.summary())

    # ------------------------------------------------------------------ output & commits
    def _flush_and_commit(self) -> None:
        assert self.core is not None
        committed = self.checkpoint.commit(self._committable)
        if committed:
            self.core.mark_committed(committed)

    def _committable(self) -> dict[int, int]:
        """Asked by the checkpoint once the flush succeeded: revoked partitions first."""
        assert self.core is not None
        self._apply_revocations()
        return self.core.committable()

    def _observe_end_to_end(self, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.end_to_end_seconds.observe(seconds)

    def on_revoked(self, partitions: list[int]) -> None:
        """Called by kafka-python's IO thread: only note the partitions (no blocking calls are
        allowed there); the loop forgets their state right after its poll returns."""
        with self._revoked_lock:
            self._revoked.update(partitions)

    def on_assigned(self, partitions: list[int]) -> None:
        """Called from kafka-python's rebalance listener: only note them (see on_revoked)."""
        with self._revoked_lock:
            self._assigned.update(partitions)

    def _restore_incidents(self) -> None:
        """Read back the incident state of newly assigned partitions (before any of their
        records is windowed): incident records go to ts.incidents' partition of the same number,
        so that partition's tail is their series' state. Only on assignment, never per poll."""
        with self._revoked_lock:
            assigned, self._assigned = self._assigned, set()
        config = self.options.incidents
        if not assigned or self.core is None or config is None:
            return
        history = self._history
        if history is None:
            history = self._history = IncidentHistory(
                self.bootstrap,
                self.settings.kafka,
                self.options.incidents_topic,
                config.idle_timeout_s,
            )
        restore_partitions(history, self.core, sorted(assigned))

    def _apply_revocations(self) -> set[int]:
        """Forget buffered samples and queued windows of revoked partitions, and rewind the
        ones assigned again to their committed offset. Nothing is lost: offsets were never
        committed past those samples, so whoever owns a partition now reads them again."""
        with self._revoked_lock:
            revoked, self._revoked = self._revoked, set()
        if not revoked or self.core is None:
            return revoked
        self.core.forget_partitions(revoked)
        for tp in self.consumer.assignment():
            if tp.partition in revoked:  # kept across the rebalance: its fetch position may be
                committed = self.consumer.committed(tp)  # past what we just forgot
                if committed is not None:
                    self.consumer.seek(tp, committed)
                elif self.settings.kafka.auto_offset_reset == "earliest":
                    self.consumer.seek_to_beginning(tp)
        log.info("partitions_revoked", partitions=sorted(revoked))
        return revoked


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: StreamWorker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.worker.on_revoked([tp.partition for tp in revoked])

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))
        self.worker.on_assigned([tp.partition for tp in assigned])
