"""Incidents: the tracker's lifecycle, the core's wiring, the worker's restore on assignment
(in-memory fakes), and a restart and a takeover on the embedded Kafka."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from worker_env import worker_env

from model.checkpoint import load_checkpoint
from model.evaluation.data import OneClassSplit
from worker.commands.stream_io import format_alert, format_incident
from worker.dev.replay import rows_as_windows
from worker.dev.services import Endpoints
from worker.errors import ConfigError
from worker.ops.settings import KafkaSettings, Settings
from worker.ops.telemetry import WorkerMetrics
from worker.registry.connection import connect
from worker.registry.store import ModelRegistry
from worker.stream.core import CoreOptions, InRecord, StreamCore
from worker.stream.core_settings import core_options, incident_options
from worker.stream.incident_record import IncidentRecord, incident_id
from worker.stream.incidents import MAX_IDS, IncidentConfig, IncidentTracker, WindowOutcome
from worker.stream.kafka_loop import RunLimits, StreamWorker
from worker.stream.messages import AnomalyRecord, window_score
from worker.stream.testing import (
    CallLog,
    FakeConsumer,
    FakeModel,
    FakeModels,
    FakeProducer,
    FakeRecord,
    fake_clients,
)
from worker.stream.topics import ensure_topics, require_partitions

LEN = 10.0  # stream seconds per window in the unit tests


def win(
    i: int, anomalous: bool, energy: float | None = None, sid: str = "s", p: int = 0
) -> WindowOutcome:
    e = energy if energy is not None else (8.0 if anomalous else 1.0)
    return WindowOutcome(
        series_id=sid,
        partition=p,
        record_id=f"{sid}-w{i}",
        start=i * LEN,
        end=i * LEN + LEN - 1,
        energy=e,
        score=window_score(e, 5.0),
        threshold=5.0,
        anomalous=anomalous,
        model=("m", 1),
        segments=((i * LEN, i * LEN + 4, e),) if anomalous else (),
    )


def run(tracker: IncidentTracker, pattern: str, sid: str = "s", p: int = 0) -> list[IncidentRecord]:
    """Feed windows 0.. by a pattern of 'x' (anomalous) and '.' (normal)."""
    out: list[IncidentRecord] = []
    for i, c in enumerate(pattern):
        out += tracker.feed(win(i, c == "x", sid=sid, p=p))
    return out


def states(records: list[IncidentRecord]) -> list[str]:
    return [r.state for r in records]


# --------------------------------------------------------------------------- the tracker


def test_an_episode_is_one_incident_open_then_resolved() -> None:
    t = IncidentTracker(IncidentConfig(resolve_after=3))
    recs = run(t, "..xxx.x...")
    assert states(recs) == ["open", "resolved"]
    opened, resolved = recs
    assert opened.id == resolved.id == incident_id("s", "m", 20.0)
    assert opened.first_window.start == 20.0 and opened.anomalous_count == 1
    assert resolved.first_window.start == 20.0 and resolved.last_window.start == 60.0
    assert resolved.window_count == 5 and resolved.anomalous_count == 4  # one normal inside
    assert resolved.resolution == "normal_windows" and resolved.updated_at == 99.0
    assert resolved.first_window_ids == ["s-w2", "s-w3", "s-w4", "s-w6"]
    assert t.counters == {"opened": 1, "updated": 0, "resolved": 1} and t.open_count == 0


def test_resolve_after_counts_consecutive_normal_windows() -> None:
    t = IncidentTracker(IncidentConfig(resolve_after=2))
    assert states(run(t, "x.x.x..x")) == ["open", "resolved", "open"]
    assert t.open_count == 1


def test_min_windows_and_gap_tolerance_decide_when_a_candidate_opens() -> None:
    cfg = IncidentConfig(min_windows=3, gap_tolerance=1, resolve_after=2)
    recs = run(IncidentTracker(cfg), "x.x.x")  # gaps of one: tolerated
    assert states(recs) == ["open"] and recs[0].first_window.start == 0.0
    assert recs[0].opened_at == 49.0 and recs[0].anomalous_count == 3
    recs = run(IncidentTracker(cfg), "xx..xx..x")  # gaps of two drop the candidate
    assert recs == []
    recs = run(IncidentTracker(cfg), "x..xxx")  # the candidate starts again after the gap
    assert states(recs) == ["open"] and recs[0].first_window.start == 30.0


def test_updates_are_rate_limited_by_stream_time() -> None:
    t = IncidentTracker(IncidentConfig(renotify_s=25.0, resolve_after=2))
    recs = run(t, "xxxxxxx..")
    # windows end at 9, 19, ...: open at 9, updates at 39 and 69 (>= 25 s after the last)
    assert states(recs) == ["open", "update", "update", "resolved"]
    assert [r.updated_at for r in recs] == [9.0, 39.0, 69.0, 89.0]
    assert [r.anomalous_count for r in recs] == [1, 4, 7, 7]
    assert t.counters["updated"] == 2


def test_peak_and_worst_segments_follow_the_worst_window() -> None:
    t = IncidentTracker(IncidentConfig(resolve_after=1))
    out = []
    for i, e in enumerate([6.0, 20.0, 7.0]):
        out += t.feed(win(i, True, e))
    out += t.feed(win(3, False))
    (resolved,) = [r for r in out if r.state == "resolved"]
    assert resolved.peak_energy == 20.0 and resolved.peak_score == 4.0
    assert resolved.peak_window_start == 10.0
    assert [s.energy for s in resolved.worst_segments] == [20.0, 7.0, 6.0]


def test_window_ids_are_bounded_first_and_last() -> None:
    t = IncidentTracker(IncidentConfig(resolve_after=1))
    n = 3 * MAX_IDS
    recs = run(t, "x" * n + ".")
    resolved = recs[-1]
    assert resolved.anomalous_count == n
    assert resolved.first_window_ids == [f"s-w{i}" for i in range(MAX_IDS)]
    assert resolved.last_window_ids == [f"s-w{i}" for i in range(n - MAX_IDS, n)]


def test_idle_timeout_resolves_by_stream_time_per_partition() -> None:
    t = IncidentTracker(IncidentConfig(idle_timeout_s=100.0))
    assert states(run(t, "xx", sid="quiet", p=0)) == ["open"]
    assert t.tick(118.0) == []  # the last window ended at 19: 99 s ago
    assert t.tick(500.0, partition=1) == []  # another partition's clock
    (resolved,) = t.tick(119.0, partition=0)
    assert resolved.resolution == "idle_timeout" and resolved.updated_at == 119.0
    # feed_batch ticks each partition with its own watermark: another series moves it on
    t2 = IncidentTracker(IncidentConfig(idle_timeout_s=100.0))
    out = t2.feed_batch([win(0, True, sid="quiet"), win(1, False, sid="busy")])
    assert states(out) == ["open"]
    out = t2.feed_batch([win(i, False, sid="busy") for i in range(2, 12)])
    assert states(out) == ["resolved"] and out[0].series_id == "quiet"


def test_ids_and_records_are_deterministic() -> None:
    pattern = "..xx.x....xxx...."
    a = run(IncidentTracker(), pattern)
    b = run(IncidentTracker(), pattern)
    assert [r.to_bytes() for r in a] == [r.to_bytes() for r in b]
    assert len({r.id for r in a}) == 2
    assert incident_id("s", "m", 20.0) != incident_id("s", "other", 20.0)


def test_restore_continues_an_open_incident_and_ignores_replayed_windows() -> None:
    pattern = "..xxxxx...."
    whole = run(IncidentTracker(IncidentConfig(renotify_s=25.0)), pattern)
    # a worker that stopped after window 5 (the 'update' at window 5 published) ...
    first = IncidentTracker(IncidentConfig(renotify_s=25.0))
    published = run(first, pattern[:6])
    assert states(published) == ["open", "update"]
    # ... and its successor, which replays from window 3 (its committed offset)
    second = IncidentTracker(IncidentConfig(renotify_s=25.0))
    assert second.restore(published) == 1 and second.open_count == 1
    replayed = []
    for i in range(3, len(pattern)):
        replayed += second.feed(win(i, pattern[i] == "x"))
    assert states(replayed) == ["resolved"]  # no second open, no double count
    assert replayed[-1] == whole[-1]


def test_restore_after_resolved_keeps_a_replay_from_opening_it_again() -> None:
    recs = run(IncidentTracker(), "xx...")
    t = IncidentTracker()
    assert t.restore(recs) == 0
    assert run(t, "xx...") == []  # the replayed windows are covered
    assert states(run(t, "xx...xx")[-1:]) == ["open"]  # later windows are new


def test_forgetting_a_partition_drops_its_incidents_only() -> None:
    t = IncidentTracker()
    run(t, "x", sid="a", p=0)
    run(t, "x", sid="b", p=1)
    t.forget_partitions([0])
    assert t.open_count == 1
    assert t.feed(win(1, True, sid="a", p=0))[0].state == "open"  # a new incident
    assert t.feed(win(1, True, sid="b", p=1)) == []


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="min_windows"):
        IncidentConfig(min_windows=0)
    with pytest.raises(ValueError, match="idle_timeout_s"):
        IncidentConfig(idle_timeout_s=0)


def test_score_is_energy_over_threshold() -> None:
    assert window_score(10.0, 4.0) == 2.5
    assert window_score(-5.0, -10.0) == 1.5  # above a negative threshold: > 1 still
    assert window_score(-15.0, -10.0) == 0.5
    assert window_score(3.0, 0.0) is None


# --------------------------------------------------------------------------- the core

RAW, ANOMALIES, INCIDENTS = "ts.raw", "ts.anomalies", "ts.incidents"


def chunk(sid: str, start: float, pattern: str) -> bytes:
    """Windows of 4 samples (FakeModel's): 'x' anomalous (9 > threshold 5), '.' normal."""
    values = [9.0 if c == "x" else 1.0 for c in pattern for _ in range(4)]
    return json.dumps({"series_id": sid, "start": start, "interval": 1, "values": values}).encode()


def incidents_of(records: list[FakeRecord] | list[object]) -> list[IncidentRecord]:
    return [
        IncidentRecord.model_validate_json(r.value)  # type: ignore[attr-defined]
        for r in records
        if r.topic == INCIDENTS  # type: ignore[attr-defined]
    ]


def test_core_publishes_incidents_beside_the_window_records() -> None:
    opts = CoreOptions(max_windows=100, linger_s=0.0, incidents=IncidentConfig(resolve_after=2))
    core = StreamCore(FakeModel(), opts)
    core.ingest([InRecord(RAW, 3, 0, b"a", chunk("a", 0, "..xxx.x...."))])
    out = core.score_batch()
    windows = [AnomalyRecord.model_validate_json(r.value) for r in out if r.topic == ANOMALIES]
    incidents = [r for r in out if r.topic == INCIDENTS]
    assert len(windows) == 11
    assert all(r.to_partition == 3 and r.key == b"a" for r in incidents)  # the input partition
    recs = [IncidentRecord.model_validate_json(r.value) for r in incidents]
    assert states(recs) == ["open", "resolved"]
    anomalous = [w for w in windows if w.anomalous]
    assert recs[1].first_window_ids == [w.id for w in anomalous]  # the link back
    assert recs[1].window_count == 5 and recs[1].source.partition == 3
    assert {w.score for w in windows} == {9.0 / 5.0, 1.0 / 5.0}
    assert all((w.score or 0) > 1 for w in anomalous)
    assert core.incidents is not None and core.incidents.counters["opened"] == 1
    stats = core.stats()
    assert (stats["incidents_opened"], stats["incidents_resolved"], stats["incidents_open"]) == (
        1,
        1,
        0,
    )


def test_core_without_incidents_publishes_none() -> None:
    core = StreamCore(FakeModel(), CoreOptions(max_windows=100, linger_s=0.0))
    core.ingest([InRecord(RAW, 0, 0, b"a", chunk("a", 0, "xxx..."))])
    assert all(r.topic == ANOMALIES for r in core.score_batch())


def test_revoked_partitions_feed_no_incidents() -> None:
    opts = CoreOptions(max_windows=100, linger_s=0.0, incidents=IncidentConfig())
    core = StreamCore(FakeModel(), opts)
    core.ingest(
        [
            InRecord(RAW, 0, 0, b"a", chunk("a", 0, "xx..")),
            InRecord(RAW, 1, 0, b"b", chunk("b", 0, "xx..")),
        ]
    )
    batch = core.take_batch()
    assert batch is not None
    core.score(batch)
    core.forget_partitions([0])
    out = core.complete(batch)
    assert [r.series_id for r in incidents_of(out)] == ["b"]  # type: ignore[arg-type]


def test_incident_metrics() -> None:
    opts = CoreOptions(max_windows=100, linger_s=0.0, incidents=IncidentConfig(resolve_after=1))
    core = StreamCore(FakeModel(), opts)
    core.ingest([InRecord(RAW, 0, 0, b"a", chunk("a", 0, "x.x.."))])
    core.score_batch()
    reg = WorkerMetrics(lambda: core).registry
    assert reg.get_sample_value("seq2gmm_incidents_opened_total") == 2
    assert reg.get_sample_value("seq2gmm_incidents_resolved_total") == 2
    assert reg.get_sample_value("seq2gmm_incidents_open") == 0


def test_settings_turn_incidents_into_core_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQ2GMM_INCIDENTS__MIN_WINDOWS", "2")
    monkeypatch.setenv("SEQ2GMM_INCIDENTS__TOPIC", "alerts")
    opts = core_options(Settings(), **incident_options(Settings()))
    assert opts.incidents is not None and opts.incidents.min_windows == 2
    assert opts.incidents_topic == "alerts"
    monkeypatch.setenv("SEQ2GMM_INCIDENTS__ENABLED", "false")
    assert incident_options(Settings()) == {}


# --------------------------------------------------------------------------- the worker (fakes)


class Lane:
    """A worker on fakes with incidents on; its history reads what ``published`` delivered
    (None: its own producer)."""

    def __init__(
        self,
        consumer: FakeConsumer,
        published: list[FakeProducer] | None,
        limits: RunLimits | None = None,
        **options: object,
    ) -> None:
        self.calls = consumer.calls
        self.consumer = consumer
        self.producer = FakeProducer(self.calls)
        published = published if published is not None else [self.producer]
        self.restored: list[list[int]] = []
        settings = Settings(batching={"scoring_thread": False})
        opts = {"linger_s": 0.0, "max_windows": 2, **incident_options(settings), **options}

        def history(partitions: list[int]) -> list[IncidentRecord]:
            self.restored.append(partitions)
            return incidents_of(
                [r for p in published for r in p.delivered if r.partition in partitions]
            )

        self.worker = StreamWorker(
            settings,
            "unused:9092",
            FakeModels(FakeModel(), self.calls),
            core_options(settings, **opts),
            limits or RunLimits(stop_at_end=True, at_end_settle_s=0.0),
            clients=fake_clients(self.consumer, self.producer),
            incident_history=history,
        )


def test_a_restarted_worker_continues_the_open_incident_without_a_second_open() -> None:
    consumer = FakeConsumer(RAW, partitions=2, calls=CallLog())
    series = {"a": (0, "..xxxxxx...."), "b": (1, ".xxx.....")}
    for sid, (p, pattern) in series.items():  # half of each pattern, one window a record
        for i, c in enumerate(pattern[: len(pattern) // 2]):
            consumer.append(p, sid.encode(), chunk(sid, 4 * i, c))
    first = Lane(consumer, [])
    first.worker.run()
    before = incidents_of(first.producer.delivered)
    # opened, and on its clean stop an update of what changed since
    assert sorted((r.series_id, r.state) for r in before) == [
        ("a", "open"),
        ("a", "update"),
        ("b", "open"),
        ("b", "update"),
    ]
    # the rest arrives; the restarted worker replays from offsets earlier than its commits (a
    # crash between flush and commit), reading each partition's incidents back on assignment
    for sid, (p, pattern) in series.items():
        for i, c in enumerate(pattern[len(pattern) // 2 :], start=len(pattern) // 2):
            consumer.append(p, sid.encode(), chunk(sid, 4 * i, c))
    replay = FakeConsumer(RAW, partitions=2, calls=CallLog())
    replay.log = consumer.log
    replay.committed_offsets = {0: 2, 1: 1}
    second = Lane(replay, [first.producer])
    second.worker.run()
    after = incidents_of(second.producer.delivered)
    assert second.restored == [[0, 1]]
    assert sorted((r.series_id, r.state) for r in after) == [("a", "resolved"), ("b", "resolved")]
    sent = [r for r in second.producer.delivered if r.topic == INCIDENTS]
    assert [r.partition for r in sent] == [series[r.key.decode()][0] for r in sent if r.key]
    a = next(r for r in after if r.series_id == "a")
    assert a.anomalous_count == 6 and a.window_count == 6  # no window counted twice


def test_a_partition_taken_away_and_given_back_restores_its_incident() -> None:
    consumer = FakeConsumer(RAW, partitions=2, calls=CallLog())
    for i, c in enumerate("xxx"):
        consumer.append(1, b"b", chunk("b", 4 * i, c))
    # every change published (renotify_s=0): the new owner restores the incident whole (with
    # the default, the windows since its latest record would be missing from the counts)
    cfg = IncidentConfig(renotify_s=0.0)
    lane = Lane(consumer, None, limits=RunLimits(max_records=7), incidents=cfg)
    # after the open is published and committed the group takes partition 1 away (its state
    # is dropped), then gives it back with four normal windows that resolve the incident
    consumer.at_poll(4, lambda: consumer.rebalance([0]))
    for i in range(3, 7):
        consumer.at_poll(6, lambda i=i: consumer.append(1, b"b", chunk("b", 4 * i, ".")))
    consumer.at_poll(6, lambda: consumer.rebalance([0, 1]))
    lane.worker.run()
    recs = incidents_of(lane.producer.delivered)
    assert states(recs) == ["open", "update", "update", "resolved"]
    assert recs[-1].anomalous_count == 3 and len({r.id for r in recs}) == 1
    assert lane.restored == [[0, 1], [0], [0, 1]]


# --------------------------------------------------------------------------- embedded Kafka


class Episode:
    """One series streamed to real workers on the embedded services: 4 normal windows, an
    episode of 6 anomalous ones, 5 normal ones (picked by the model's own scores of TwoLeadECG
    test rows, so the episode is what the worker sees); topics, group and registry of its own."""

    def __init__(
        self, services: Endpoints, unique: str, twolead: tuple[OneClassSplit, Path], tmp: Path
    ) -> None:
        split, model_dir = twolead
        self.bootstrap = services.kafka_bootstrap
        self.raw, self.topic = f"raw-{unique}", f"inc-{unique}"
        self.env = worker_env(
            services,
            unique,
            tmp / "cache",
            INCIDENTS__RENOTIFY_S="0",  # every change published: exact counts
            KAFKA__NUM_PARTITIONS="2",
            BATCHING__MAX_WINDOWS="1",  # a batch (and a commit) per window
            BATCHING__LINGER_MS="0",
        )
        ensure_topics(self.bootstrap, KafkaSettings(num_partitions=2), [self.raw, self.topic])
        with ModelRegistry(connect(services.redis_url), unique) as registry:
            registry.publish_dir(model_dir, "ecg", promote=True)
        detector = load_checkpoint(model_dir)
        energies = detector.score(split.test)
        order = np.argsort(energies)
        normal, anomalous = order[:9], order[::-1][:6]
        threshold = detector.threshold.value
        assert energies[anomalous[-1]] > threshold > energies[normal[-1]]
        rows = [split.test[i] for i in [*normal[:4], *anomalous, *normal[4:]]]
        self.messages = [(k, json.dumps(m).encode()) for k, m in rows_as_windows(rows, prefix="s")]
        self.procs: list[subprocess.Popen[str]] = []

    def produce(self, part: list[tuple[str, bytes]]) -> None:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap)
        for key, value in part:
            producer.send(self.raw, key=key.encode(), value=value)
        producer.flush()
        producer.close()

    def worker(self, *args: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "worker", "worker", "--model", "ecg", *args]
        proc = subprocess.Popen(
            cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        return proc

    def incidents(self, until: Callable[[list[IncidentRecord]], bool]) -> list[IncidentRecord]:
        return read_incidents(self.bootstrap, self.topic, until)

    def check_one_incident(self) -> None:
        """Exactly one open, then resolved, every window of the episode counted once."""
        records = self.incidents(lambda r: any(x.state == "resolved" for x in r))
        states_ = [r.state for r in records]
        assert states_.count("open") == 1 and states_[-1] == "resolved", states_
        assert len({r.id for r in records}) == 1
        final = records[-1]
        assert final.anomalous_count == 6 and final.window_count == 6
        assert final.resolution == "normal_windows"

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


@pytest.fixture
def episode(
    services: Endpoints, unique: str, twolead: tuple[OneClassSplit, Path], tmp_path: Path
) -> Iterator[Episode]:
    e = Episode(services, unique, twolead, tmp_path)
    yield e
    e.close()


@pytest.mark.integration
def test_killed_mid_incident_the_restarted_worker_opens_it_once_and_resolves_it(
    episode: Episode,
) -> None:
    """A worker is killed (SIGKILL: no drain, no flush, no commit) while an incident is open;
    its successor reads the incident back from ts.incidents and continues it."""
    episode.produce(episode.messages[:7])  # up to the episode's third window
    first = episode.worker()
    try:
        seen = episode.incidents(lambda r: len(r) >= 3)
    finally:
        first.kill()  # mid-incident
        _, first_err = first.communicate()
    assert [r.state for r in seen[:3]] == ["open", "update", "update"], first_err[-3000:]
    episode.produce(episode.messages[7:])
    second = episode.worker("--stop-at-end")
    _, err = second.communicate(timeout=180)
    assert second.returncode == 0, err[-3000:]
    restored = [e for e in log_events(err) if e.get("event") == "incidents_restored"]
    assert restored and restored[0]["open"] == 1, restored
    episode.check_one_incident()


@pytest.mark.integration
def test_a_second_worker_takes_the_open_incident_over(episode: Episode) -> None:
    """A second worker joins the group while an incident is open and the first one stops
    (SIGTERM): the partition moves in a real rebalance and the incident goes along."""
    episode.produce(episode.messages[:7])
    first = episode.worker()
    episode.incidents(lambda r: len(r) >= 3)  # open, update, update
    second = episode.worker("--idle-timeout", "20")  # outlasts the rebalance, then stops
    first.send_signal(signal.SIGTERM)
    _, first_err = first.communicate(timeout=60)
    assert first.returncode == 0, first_err[-3000:]
    episode.produce(episode.messages[7:])
    _, err = second.communicate(timeout=180)
    assert second.returncode == 0, err[-3000:]
    restored = [e for e in log_events(err) if e.get("event") == "incidents_restored"]
    assert any(e["open"] == 1 for e in restored), restored
    episode.check_one_incident()


def log_events(text: str) -> list[dict[str, object]]:
    """The JSON log lines of a worker's output."""
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def read_incidents(
    bootstrap: str, topic: str, until: Callable[[list[IncidentRecord]], bool], timeout: float = 60
) -> list[IncidentRecord]:
    """Every record of ``topic`` in order (one series: one partition) once ``until`` holds, or
    those read when ``timeout`` is up."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    got: list[IncidentRecord] = []
    deadline = time.monotonic() + timeout
    try:
        while not until(got) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                got += [IncidentRecord.model_validate_json(m.value) for m in batch]
    finally:
        consumer.close()
    return got


def test_tail_prints_an_incident_on_one_line() -> None:
    recs = run(IncidentTracker(IncidentConfig(resolve_after=1)), "xx.")
    line = format_incident(recs[-1])
    assert line.startswith("INCIDENT RESOLVED s 1970-01-01 00:00:00Z..1970-01-01 00:00:19Z")
    assert "2 anomalous of 2 windows" in line and "peak score 1.60" in line
    assert "m:v1" in line and "(normal windows)" in line


@pytest.mark.integration
def test_the_worker_refuses_an_incident_topic_with_fewer_partitions(
    services: Endpoints, unique: str
) -> None:
    raw, inc = f"raw-{unique}", f"inc-{unique}"
    ensure_topics(services.kafka_bootstrap, KafkaSettings(num_partitions=4), [raw])
    ensure_topics(services.kafka_bootstrap, KafkaSettings(num_partitions=2), [inc])
    kafka = KafkaSettings(raw_topic=raw)
    with pytest.raises(ConfigError, match=f"{inc} has 2 partitions, fewer than {raw}'s 4"):
        require_partitions(services.kafka_bootstrap, kafka, inc, raw)
    assert require_partitions(services.kafka_bootstrap, kafka, raw, raw) == 4


def test_tail_shows_the_score_of_a_window() -> None:
    core = StreamCore(FakeModel(), CoreOptions(max_windows=100, linger_s=0.0))
    core.ingest([InRecord(RAW, 0, 0, b"a", chunk("a", 0, "x"))])
    (out,) = core.score_batch()
    line = format_alert(AnomalyRecord.model_validate_json(out.value))
    assert "ANOMALY a" in line and "score 1.80 = energy 9.000 / threshold 5.000" in line
