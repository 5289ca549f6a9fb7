"""StreamWorker (the Kafka loop) driven through the in-memory fakes of worker.stream.testing.

The worker is built the way ``seq2gmm worker`` builds it, with the fake clients injected; every
test reads the shared call log to check the order of what the loop did.
"""

from __future__ import annotations

import json
import threading

import pytest
from kafka.errors import KafkaError

from worker.errors import ServiceError
from worker.ops.http_server import Health
from worker.ops.settings import Settings
from worker.ops.telemetry import WorkerMetrics
from worker.stream import kafka_loop
from worker.stream.core import Batch
from worker.stream.core_settings import core_options
from worker.stream.envelopes import ERROR_HEADER
from worker.stream.kafka_loop import RunLimits, StreamWorker
from worker.stream.messages import AnomalyRecord
from worker.stream.scoring import ThreadedScoring
from worker.stream.testing import (
    CallLog,
    FakeConsumer,
    FakeModel,
    FakeModels,
    FakeProducer,
    FakeRecord,
    fake_clients,
)

RAW, ANOMALIES, DLQ = "ts.raw", "ts.anomalies", "ts.raw.dlq"
LAG = "seq2gmm_consumer_lag"


class Rig:
    """A worker wired to fakes sharing one call log."""

    def __init__(
        self,
        partitions: int = 1,
        model: FakeModel | None = None,
        max_poll_records: int = 500,
        settle_s: float = 0.0,
        max_polls: int = 500,
        end_lag: int = 0,
        scoring_thread: bool = False,
        **options: object,
    ) -> None:
        self.calls = CallLog()
        self.consumer = FakeConsumer(
            RAW,
            partitions,
            self.calls,
            max_poll_records=max_poll_records,
            max_polls=max_polls,
            end_lag=end_lag,
        )
        self.producer = FakeProducer(self.calls)
        self.models = FakeModels(model or FakeModel(), self.calls)
        # inline scoring by default: the order of every call is then deterministic
        settings = Settings(batching={"scoring_thread": scoring_thread})
        self.worker = StreamWorker(
            settings,
            "unused:9092",
            self.models,
            core_options(settings, **{"linger_s": 0.0, **options}),
            RunLimits(stop_at_end=True, at_end_settle_s=settle_s),
            health=Health(stuck_after_s=60),
            clients=fake_clients(self.consumer, self.producer),
        )

    def chunk(self, partition: int, sid: str, start: float, values: list[float]) -> int:
        body = {"series_id": sid, "start": start, "interval": 1, "values": values}
        return self.consumer.append(partition, sid.encode(), json.dumps(body).encode())

    def run(self) -> dict[str, object]:
        return self.worker.run()

    def sends(self, since: int = 0) -> list[tuple[int, FakeRecord]]:
        return [
            (i, c.args[0])
            for i, c in enumerate(self.calls.calls)
            if i >= since and c.method == "send"
        ]

    def inputs_published(self, before: int) -> set[tuple[int, int]]:
        """(partition, offset) of the input records whose output was sent before call ``before``."""
        out: set[tuple[int, int]] = set()
        for at, record in self.sends():
            if at < before:
                partition, offsets = inputs_covered(record)
                out.update((partition, o) for o in offsets)
        return out

    def commits(self) -> list[tuple[int, dict[int, int]]]:
        return [(i, c.args[0]) for i, c in enumerate(self.calls.calls) if c.method == "commit"]

    def first(self, method: str) -> int:
        return self.calls.indices(method)[0]

    def last(self, method: str) -> int:
        return self.calls.indices(method)[-1]


def anomaly(record: FakeRecord) -> AnomalyRecord:
    assert record.topic == ANOMALIES and record.value is not None
    return AnomalyRecord.model_validate_json(record.value)


def inputs_covered(record: FakeRecord) -> tuple[int, range]:
    """(partition, input offsets) an output record stands for."""
    if record.topic == DLQ:
        headers = dict(record.headers)
        offset = int(headers["seq2gmm.source.offset"])
        return int(headers["seq2gmm.source.partition"]), range(offset, offset + 1)
    src = anomaly(record).source
    assert src is not None
    return src.partition, range(src.first_offset, src.last_offset + 1)


def assert_commits_follow_flushed_publishes(rig: Rig) -> None:
    """Every commit comes after a flush of every send, and only past published inputs."""
    commits = rig.commits()
    assert commits, "nothing was committed"
    for at, offsets in commits:
        before = rig.calls.methods()[:at]
        last_flush = len(before) - 1 - before[::-1].index("flush")
        assert "send" not in before[last_flush:], "a record was sent but not flushed"
        published = rig.inputs_published(before=at)
        for partition, offset in offsets.items():
            handled = {(partition, o) for o in range(offset)}
            assert handled <= published, f"committed {partition}:{offset} past unpublished input"


def test_records_are_published_and_flushed_before_their_offsets_are_committed() -> None:
    rig = Rig(partitions=2, max_windows=2)
    for k in range(5):
        rig.chunk(0, "a", 4 * k, [1, 2, 3, 4])  # one window per record
        rig.chunk(1, "b", 4 * k, [5, 6, 7, 8])
    rig.consumer.append(1, b"b", b"not json")  # dead-lettered: handled once published
    rig.run()

    assert_commits_follow_flushed_publishes(rig)
    # committed offset = last processed + 1, on every partition
    assert rig.consumer.committed_offsets == {0: 5, 1: 6}
    assert len(rig.producer.delivered) == 11
    assert rig.calls.methods()[-2:] == ["close", "close"]  # consumer, then producer


@pytest.mark.parametrize("settle_s", [0.0, 0.05])
def test_stop_at_end_waits_for_the_end_offsets_to_settle(settle_s: float) -> None:
    """A broker's high watermark can lag its log (tansu's does): a record that shows up after
    the first look at the end offsets is still consumed when the end must hold for a while."""
    rig = Rig(settle_s=settle_s, max_polls=1_000_000)
    rig.chunk(0, "a", 0, [1, 2, 3, 4])
    late = [0]

    def arrive() -> None:
        late[0] = rig.chunk(0, "a", 4, [5, 6, 7, 8])

    rig.consumer.at_poll(3, arrive)  # poll 1 fetches, poll 2 finds the end, poll 3 more
    rig.run()
    if settle_s:
        assert rig.consumer.committed_offsets == {0: late[0] + 1}
        assert len(rig.producer.delivered) == 2
    else:  # without settling, the worker stops at the first look at the end
        assert rig.consumer.committed_offsets == {0: 1}


def test_stop_at_end_and_the_lag_metric_do_not_trust_a_lagging_list_offsets() -> None:
    """tansu's ListOffsets answer lags the log end by hundreds of records: the worker takes
    the high watermark of its fetches too, for stopping at the end and for the lag metric."""
    rig = Rig(end_lag=3, max_poll_records=1, max_windows=100, linger_s=60.0)
    for k in range(6):
        rig.chunk(0, "a", 4 * k, [1, 2, 3, 4])
    metrics = WorkerMetrics(lambda: rig.worker.core)
    rig.worker.metrics = metrics
    lags: list[float | None] = []
    rig.consumer.at_poll(2, rig.worker._observe)  # after the first fetch: 5 records to go
    rig.consumer.at_poll(
        3, lambda: lags.append(metrics.registry.get_sample_value(LAG, {"partition": "0"}))
    )
    rig.run()
    assert lags == [5.0]  # ListOffsets alone says 2
    assert rig.consumer.committed_offsets == {0: 6}  # not stopped at offset 3
    assert len(rig.producer.delivered) == 6


def test_a_broker_outage_is_reported_degraded_on_readyz_and_in_the_metrics() -> None:
    rig = Rig()
    rig.chunk(0, "a", 0, [1, 2, 3, 4])
    metrics = WorkerMetrics(lambda: rig.worker.core)
    rig.worker.metrics = metrics
    seen: list[tuple[str, float | None]] = []

    def outage() -> None:  # what GroupConsumer says when end_offsets gets no answer
        rig.consumer.broker_reachable = False  # type: ignore[attr-defined]
        rig.worker._observe()
        assert rig.worker.health is not None
        status = rig.worker.health.ready()[1]["status"]
        seen.append((status, metrics.registry.get_sample_value("seq2gmm_broker_reachable")))

    rig.consumer.at_poll(2, outage)
    rig.run()
    assert seen == [("degraded: Kafka broker unreachable, serving fake:1", 0.0)]


def test_a_failed_publish_stops_the_worker_without_committing_past_it() -> None:
    rig = Rig(max_windows=1)
    for k in range(3):
        rig.chunk(0, "a", 4 * k, [1, 2, 3, 4])
    rig.producer.fail = lambda r: (
        KafkaError("not enough replicas") if anomaly(r).window.start == 4.0 else None
    )
    with pytest.raises(ServiceError, match="not committed"):
        rig.run()
    assert rig.consumer.committed_offsets == {0: 1}  # the first window's batch only
    assert rig.consumer.closed and rig.calls.calls[-2].args == (False,)  # no autocommit


def test_a_revoked_partition_is_forgotten_and_nothing_of_it_is_published() -> None:
    rig = Rig(partitions=2, max_windows=100, linger_s=60.0)  # nothing scored before the end
    for k in range(3):
        rig.chunk(0, "a", 4 * k, [1, 2, 3, 4])
        rig.chunk(1, "b", 4 * k, [5, 6, 7, 8])
    rig.chunk(1, "b", 12, [5, 6])  # an incomplete window too
    rig.consumer.at_poll(2, lambda: rig.consumer.rebalance([0]))  # partition 1 goes elsewhere
    rig.run()

    revoked = rig.last("revoked")  # the first one, empty, came with the first assignment
    assert rig.calls.calls[revoked].args == (0, 1)  # eager: everything, then {0} back
    assert all(inputs_covered(r)[0] == 0 for _, r in rig.sends(revoked))
    assert all(1 not in offsets for _, offsets in rig.commits())
    core = rig.worker.core
    assert core is not None and "b" not in core.windower._series
    # partition 0 was kept: its buffered state was forgotten too, so it is read again from
    # its committed offset (none yet: the beginning) and every window is published once
    assert ("seek_to_beginning", (0,)) in [(c.method, c.args) for c in rig.calls.calls[revoked:]]
    starts = sorted(anomaly(r).window.start for _, r in rig.sends())
    assert starts == [0.0, 4.0, 8.0]
    assert rig.consumer.committed_offsets == {0: 3}


def test_a_partition_kept_across_a_rebalance_is_reread_from_its_commit() -> None:
    # one window scored per poll, so commits trail the consumed records; and the poll that
    # brings the rebalance also returns records 2, 3 of the kept partition: the loop must drop
    # them, since it forgot the state before them and seeks back to the commit
    rig = Rig(max_windows=1, max_poll_records=2)
    for k in range(3):
        rig.chunk(0, "a", 4 * k, [1, 2, 3, 4])
    rig.chunk(0, "a", 12, [1, 2])  # buffered: never a window
    rig.consumer.at_poll(2, lambda: rig.consumer.rebalance([0]))
    rig.run()

    revoked = rig.last("revoked")
    committed_then = [offsets for at, offsets in rig.commits() if at < revoked][-1][0]
    assert rig.calls.calls[revoked + 2].args == ({0: 2},)  # the poll of the rebalance
    seeks = [c.args for c in rig.calls.calls[revoked:] if c.method == "seek"]
    assert seeks == [(0, committed_then)]
    starts = [anomaly(r).window.start for _, r in rig.sends()]
    assert sorted(set(starts)) == [0.0, 4.0, 8.0]  # none lost; re-read ones come again
    assert rig.consumer.committed_offsets == {0: 3}  # the partial window's record is not done


def test_a_promotion_publishes_the_old_models_windows_first() -> None:
    rig = Rig(max_windows=100, linger_s=60.0)  # windows wait in the queue until scored
    for k in range(3):
        rig.chunk(0, "a", 4 * k, [1, 2, 3, 4])
    rig.consumer.at_poll(1, lambda: rig.models.promote(FakeModel(version=2)))
    rig.consumer.at_poll(2, lambda: [rig.chunk(0, "a", 4 * k, [1, 2, 3, 4]) for k in (3, 4)])
    rig.run()

    promoted = rig.first("promoted")
    versions = [(i, anomaly(r).model.version) for i, r in rig.sends()]
    old = [i for i, v in versions if v == 1]
    new = [i for i, v in versions if v == 2]
    assert len(old) == 3 and len(new) == 2  # windows queued before the swap: the old model
    assert promoted < min(old) and max(old) < min(new)
    between = rig.calls.methods()[max(old) : min(new)]
    assert "flush" in between and "commit" in between  # settled before the swap
    assert "seek" not in rig.calls.methods()  # same geometry: nothing to read again


def test_a_promotion_with_another_geometry_rewinds_to_the_buffered_samples() -> None:
    rig = Rig(max_windows=10, max_poll_records=5)
    for k in range(8):
        rig.chunk(0, "a", 2 * k, [2 * k, 2 * k + 1])  # two samples per record
    wide = FakeModel(version=2, length=6, hop=6)
    rig.consumer.at_poll(1, lambda: rig.models.promote(wide))
    rig.run()

    # poll 1 read records 0..4: windows [0..3] and [4..7] by v1, samples 8, 9 (record 4)
    # buffered; the swap drops that buffer and seeks back to record 4
    promoted = rig.first("promoted")
    assert [c.args for c in rig.calls.calls[promoted:] if c.method == "seek"] == [(0, 4)]
    windows = [(anomaly(r).model.version, anomaly(r).window.start) for _, r in rig.sends()]
    assert windows == [(1, 0.0), (1, 4.0), (2, 8.0)]  # samples 8, 9 were not lost
    assert rig.consumer.committed_offsets == {0: 7}  # record 7 waits in v2's buffer


def test_fetching_pauses_while_scoring_falls_behind_and_resumes() -> None:
    rig = Rig(max_windows=2, max_poll_records=2)
    for k in range(4):
        rig.chunk(0, "a", 40 * k, [1.0] * 40)  # ten windows per record
    rig.run()

    methods = rig.calls.methods()
    pause, resume = methods.index("pause"), methods.index("resume")
    assert rig.calls.calls[pause].args == (0,) and pause < resume
    polls = [c.args[0] for c in rig.calls.calls[pause:resume] if c.method == "poll"]
    assert polls and all(p == {} for p in polls), "fetched while paused"
    # 20 windows came in, 2 were scored, 18 > 4 x 2 queued: pause; one batch per poll until
    # at most 2 are left: 8 more batches
    assert len(polls) == 8
    assert len(rig.producer.delivered) == 40
    assert rig.consumer.committed_offsets == {0: 4}


def test_stopping_drains_scores_publishes_and_commits_before_exit() -> None:
    rig = Rig(max_windows=100, linger_s=60.0)  # nothing is ready before the stop
    for k in range(3):
        rig.chunk(0, "a", 4 * k, [1, 2, 3, 4])
    rig.consumer.at_poll(3, rig.worker.request_stop)  # as SIGTERM would
    rig.consumer.append(0, b"a", b"[]")  # a dead letter, published at once
    summary = rig.run()

    assert summary["scored"] == 3 and summary["dead_lettered"] == 1
    tail = [c.method for c in rig.calls.calls if c.method not in ("poll", "commit")]
    assert tail[-6:] == ["send", "send", "send", "flush", "close", "close"]
    assert rig.commits()[-1][1] == {0: 4}  # last processed + 1
    assert rig.calls.methods()[-3:] == ["commit", "close", "close"]
    assert rig.consumer.committed_offsets == {0: 4} and rig.producer.closed
    assert [r.topic for r in rig.producer.delivered] == [DLQ, ANOMALIES, ANOMALIES, ANOMALIES]
    assert dict(rig.producer.delivered[0].headers)[ERROR_HEADER]


def test_end_to_end_latency_is_observed_for_each_published_window() -> None:
    rig = Rig(max_windows=2)
    for k in range(4):
        rig.chunk(0, "a", 4 * k, [1, 2, 3, 4])
    metrics = WorkerMetrics(lambda: rig.worker.core)
    rig.worker.metrics = metrics  # as seq2gmm worker does when the metrics port is set
    rig.run()
    count = metrics.registry.get_sample_value("seq2gmm_end_to_end_seconds_count")
    assert count == 4


# --------------------------------------------------------------------------- scoring thread
# The loop polls on while a batch is scored on the thread of worker.stream.scoring, and the
# checkpoint order (publish -> flush -> commit, never past an unpublished input) still holds.

FAST_POLLS = 1_000_000  # the fake's poll returns at once: the loop spins while a batch scores
SETTLE_S = 0.5  # the end must hold this long before the worker stops: gates open before that


def gated_rig(open_at_poll: int) -> Rig:
    """Ten one-window records, scored on the thread by a model whose batches wait until the
    ``open_at_poll``-th poll (logged as ``gate_opened``); two windows a batch, so fetching
    pauses after a few polls."""
    gate = threading.Event()
    rig = Rig(
        model=FakeModel(gate=gate),
        scoring_thread=True,
        max_windows=2,
        max_poll_records=2,
        max_polls=FAST_POLLS,
        settle_s=SETTLE_S,
    )
    for k in range(10):
        rig.chunk(0, "a", 4 * k, [1, 2, 3, 4])  # one window per record

    def open_gate() -> None:
        rig.calls.record("test", "gate_opened")
        gate.set()

    rig.consumer.at_poll(open_at_poll, open_gate)
    return rig


def test_the_loop_polls_on_while_a_batch_is_scored_and_commits_only_what_was_published() -> None:
    rig = gated_rig(4)  # polls 1-3 fetched 6 records; then paused, waiting
    rig.run()

    opened = rig.first("gate_opened")
    polled = [c.args[0] for c in rig.calls.calls[:opened] if c.method == "poll"]
    fetched = sum(n for p in polled for n in p.values())
    assert fetched >= 4, "the loop stopped polling while the first batch was scored"
    assert "send" not in rig.calls.methods()[:opened]  # nothing scored before the gate
    assert_commits_follow_flushed_publishes(rig)
    starts = sorted(anomaly(r).window.start for _, r in rig.sends())
    assert starts == [4.0 * k for k in range(10)]  # every window once
    assert rig.consumer.committed_offsets == {0: 10}


def test_a_long_batch_does_not_stop_polling_while_paused(monkeypatch: pytest.MonkeyPatch) -> None:
    """While paused with a batch in flight the loop waits for the batch, but still polls now and
    then: a batch longer than max_poll_interval_ms must not make the group drop the worker."""
    monkeypatch.setattr(kafka_loop, "PAUSED_POLL_S", 0.05)
    rig = gated_rig(12)  # the 12th poll comes only from the polls made while paused
    rig.run()
    methods = rig.calls.methods()
    assert methods.index("pause") < methods.index("gate_opened")
    assert "send" not in methods[: methods.index("gate_opened")]
    assert rig.consumer.committed_offsets == {0: 10}


def test_batches_grow_with_the_backlog_while_one_is_scored() -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)
    rig = Rig(
        model=model, scoring_thread=True, max_windows=64, max_polls=FAST_POLLS, settle_s=SETTLE_S
    )
    rig.chunk(0, "a", 0, [1.0] * 4)  # the first batch: one window, scored while ...
    for k in range(1, 9):
        rig.consumer.at_poll(k + 1, lambda k=k: rig.chunk(0, "a", 4 * k, [1.0] * 4))
    rig.consumer.at_poll(20, gate.set)  # ... eight more arrive
    rig.run()
    assert model.calls == [1, 8]


def test_a_scoring_error_stops_the_worker_without_committing_past_its_batch() -> None:
    rig = Rig(
        model=FakeModel(fail_with=ZeroDivisionError("a bug in the model")),
        scoring_thread=True,
        max_windows=1,
        max_polls=FAST_POLLS,
        settle_s=SETTLE_S,
    )
    for k in range(3):
        rig.chunk(0, "a", 4 * k, [1, 2, 3, 4])
    with pytest.raises(ZeroDivisionError, match="a bug"):
        rig.run()
    assert rig.consumer.committed_offsets == {}
    assert rig.sends() == [] and rig.consumer.closed


def test_records_of_a_partition_revoked_while_in_flight_are_not_published() -> None:
    gate = threading.Event()
    rig = Rig(
        partitions=2,
        model=FakeModel(gate=gate),
        scoring_thread=True,
        max_windows=10,
        max_polls=FAST_POLLS,
        settle_s=SETTLE_S,
    )
    rig.chunk(0, "a", 0, [1, 2, 3, 4])
    rig.chunk(1, "b", 0, [5, 6, 7, 8])
    rig.consumer.at_poll(3, lambda: rig.consumer.rebalance([0]))  # partition 1 goes elsewhere
    rig.consumer.at_poll(10, gate.set)
    rig.run()

    assert {inputs_covered(r)[0] for _, r in rig.sends()} == {0}
    assert all(1 not in offsets for _, offsets in rig.commits())
    assert rig.consumer.committed_offsets == {0: 1}  # partition 0, re-read, scored once more


def test_the_thread_returns_batches_in_order_and_counts_what_is_in_flight() -> None:
    order: list[int] = []
    gate = threading.Event()

    def score(batch: Batch) -> None:
        gate.wait()
        order.append(batch.seconds_marker)  # type: ignore[attr-defined]

    scoring = ThreadedScoring(score, max_in_flight=2)
    try:
        batches = []
        for i in range(2):
            b = Batch(FakeModel(), [], [])
            b.seconds_marker = i  # type: ignore[attr-defined]
            batches.append(b)
            scoring.submit(b)
        assert not scoring.has_room() and scoring.in_flight() == 2 and scoring.done() == []
        gate.set()
        got: list[Batch] = []
        while len(got) < 2:
            scoring.wait(5.0)
            got += scoring.done()
        assert got == batches and order == [0, 1]
        assert scoring.has_room() and scoring.in_flight() == 0
    finally:
        scoring.close()
