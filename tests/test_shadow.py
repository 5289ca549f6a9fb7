"""Shadow scoring: a second alias's version scores the same windows beside the active one.

Core- and loop-level tests on the in-memory fakes of worker.stream.testing; the integration
test (real broker, valkey, registry aliases and worker process) is at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer
from structlog.testing import capture_logs
from worker_env import worker_env

from model.evaluation.data import OneClassSplit
from worker.dev.replay import rows_as_windows
from worker.dev.services import Endpoints
from worker.ops.http_server import Health
from worker.ops.settings import KafkaSettings, Settings
from worker.ops.telemetry import WorkerMetrics
from worker.registry.connection import connect
from worker.registry.store import ModelRegistry
from worker.stream.core import CoreOptions, InRecord, StreamCore
from worker.stream.core_settings import core_options
from worker.stream.history import read_history
from worker.stream.kafka_loop import RunLimits, StreamWorker
from worker.stream.messages import AnomalyRecord
from worker.stream.served import ServedModel
from worker.stream.testing import (
    CallLog,
    FakeConsumer,
    FakeModel,
    FakeModels,
    FakeProducer,
    fake_clients,
)
from worker.stream.topics import ensure_topics

RAW, ANOMALIES, SHADOW, DLQ = "ts.raw", "ts.anomalies", "ts.anomalies.shadow", "ts.raw.dlq"


def chunk(offset: int, sid: str, start: float, values: list[float]) -> InRecord:
    body = {"series_id": sid, "start": start, "interval": 1, "values": values}
    return InRecord(RAW, 0, offset, sid.encode(), json.dumps(body).encode())


# four windows of 4 samples: max |value| 1, 7, 3, 9 (FakeModel's energy)
WINDOWS = [[1, 0, 0, 1], [7, 0, 0, 0], [3, 0, 0, 0], [0, 0, 0, 9]]
FLAT = [v for w in WINDOWS for v in w]


def scored_core(active: ServedModel, shadow: ServedModel | None) -> tuple[StreamCore, list]:  # type: ignore[type-arg]
    core = StreamCore(active, CoreOptions(max_windows=100, linger_s=0.0))
    core.shadow = shadow
    assert core.ingest([chunk(0, "s-1", 0.0, [*FLAT, 0])]) == []
    return core, core.score_batch()


def by_topic(records: list, topic: str) -> list[AnomalyRecord]:  # type: ignore[type-arg]
    return [AnomalyRecord.model_validate_json(r.value) for r in records if r.topic == topic]


def test_the_shadow_scores_the_same_windows_and_its_records_go_to_the_shadow_topic() -> None:
    active, shadow = FakeModel(version=1, threshold=5.0), FakeModel(version=2, threshold=2.0)
    core, records = scored_core(active, shadow)
    main, shadowed = by_topic(records, ANOMALIES), by_topic(records, SHADOW)
    assert [(r.window.start, r.energy) for r in main] == [
        (r.window.start, r.energy) for r in shadowed
    ]
    assert {r.model.version for r in main} == {1} and {r.model.version for r in shadowed} == {2}
    assert [r.anomalous for r in main] == [False, True, False, True]
    assert [r.anomalous for r in shadowed] == [False, True, True, True]
    assert {r.id for r in main}.isdisjoint({r.id for r in shadowed})
    assert all(r.ready_at is None for r in records if r.topic == SHADOW)  # no latency sample
    assert dict(core.shadow_gate.counters) == {"both": 2, "shadow_only": 1, "neither": 1}
    assert core.stats()["shadow"] == {"both": 2, "shadow_only": 1, "neither": 1}
    assert core.counters["scored"] == 4 and core.counters["anomalous"] == 2


def test_without_a_shadow_nothing_goes_to_the_shadow_topic() -> None:
    core, records = scored_core(FakeModel(), None)
    assert by_topic(records, SHADOW) == [] and len(by_topic(records, ANOMALIES)) == 4
    assert "shadow" not in core.stats()


def test_a_shadow_with_another_cutter_is_skipped_with_one_warning_per_version() -> None:
    active, shadow = FakeModel(version=1), FakeModel(version=2, length=2, hop=2)
    with capture_logs() as logs:
        core, records = scored_core(active, shadow)
        core.ingest([chunk(1, "s-1", 17.0, FLAT)])
        records += core.score_batch()
    assert by_topic(records, SHADOW) == [] and len(by_topic(records, ANOMALIES)) == 8
    assert core.shadow_gate.counters["skipped"] == 8
    warnings = [e for e in logs if e["event"] == "shadow_incompatible"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert warnings[0]["shadow_cycles"] == {"kind": "fixed", "length": 2, "hop": 2}


def test_a_failing_shadow_never_touches_the_active_records() -> None:
    bug = FakeModel(version=2, fail_with=RuntimeError("a bug in the candidate"))
    core, records = scored_core(FakeModel(version=1), bug)
    assert len(by_topic(records, ANOMALIES)) == 4 and by_topic(records, SHADOW) == []
    assert not [r for r in records if r.topic == DLQ]
    assert core.shadow_gate.counters["failed"] == 4 and core.dead_letters == {}


def test_windows_the_shadow_refuses_are_counted_not_dead_lettered() -> None:
    picky = FakeModel(version=2, unscorable=7.0)  # refuses the window holding a 7
    core, records = scored_core(FakeModel(version=1), picky)
    assert len(by_topic(records, ANOMALIES)) == 4 and len(by_topic(records, SHADOW)) == 3
    assert core.shadow_gate.counters["failed"] == 1 and core.dead_letters == {}
    assert core.shadow_gate.counters["both"] == 1  # the 9 (the 7 was not shadow-scored)


def test_a_batch_keeps_the_shadow_it_was_taken_with() -> None:
    core = StreamCore(FakeModel(version=1), CoreOptions(max_windows=100, linger_s=0.0))
    core.shadow = FakeModel(version=2)
    core.ingest([chunk(0, "s-1", 0.0, [1, 2, 3, 4, 0])])
    batch = core.take_batch()
    assert batch is not None
    core.shadow = FakeModel(version=3)  # the alias moved while the batch was in flight
    core.score(batch)
    assert {r.model.version for r in by_topic(core.complete(batch), SHADOW)} == {2}


class FakeShadow:
    """A shadow source whose model a test sets."""

    def __init__(self, model: FakeModel | None) -> None:
        self.model = model

    def current(self) -> FakeModel | None:
        return self.model


def run_loop(shadow: FakeModel) -> tuple[WorkerMetrics, FakeProducer, CallLog]:
    """One worker loop over the four WINDOWS, the active FakeModel v1 (threshold 5) and
    ``shadow``, with its metrics; returns them once it consumed everything."""
    calls = CallLog()
    consumer, producer = FakeConsumer(RAW, 1, calls), FakeProducer(calls)
    settings = Settings(batching={"scoring_thread": False})
    worker = StreamWorker(
        settings,
        "unused:9092",
        FakeModels(FakeModel(version=1, threshold=5.0), calls),
        core_options(settings, linger_s=0.0),
        RunLimits(stop_at_end=True, at_end_settle_s=0.0),
        health=Health(stuck_after_s=60),
        clients=fake_clients(consumer, producer),
        shadow=FakeShadow(shadow),
    )
    metrics = WorkerMetrics(lambda: worker.core, drift=lambda: worker.drift)
    worker.metrics = metrics
    body = {"series_id": "s-1", "start": 0, "interval": 1, "values": [*FLAT, 0]}
    consumer.append(0, b"s-1", json.dumps(body).encode())
    worker.run()
    return metrics, producer, calls


def test_the_loop_publishes_shadow_records_and_exports_the_agreement() -> None:
    metrics, producer, calls = run_loop(FakeModel(version=2, threshold=2.0))
    topics = [r.topic for r in producer.delivered]
    assert topics.count(ANOMALIES) == 4 and topics.count(SHADOW) == 4
    value = metrics.registry.get_sample_value
    for label, n in (("both", 2), ("active_only", 0), ("shadow_only", 1), ("neither", 1)):
        assert value("seq2gmm_shadow_windows_total", {"agreement": label}) == n, label
    assert value("seq2gmm_shadow_model_info", {"name": "fake", "version": "2"}) == 1
    assert value("seq2gmm_window_anomaly_share", {"model": "fake"}) == 0.5
    assert value("seq2gmm_drift_windows", {"model": "fake"}) == 4
    # the shadow records are sent, flushed, then their input committed, like the active ones
    methods = calls.methods()
    for i, call in enumerate(calls.calls):
        if call.method == "send" and call.args[0].topic == SHADOW:
            flush = methods.index("flush", i)
            assert "commit" in methods[flush:]


def test_the_loop_skips_a_shadow_that_cuts_windows_differently() -> None:
    metrics, producer, _ = run_loop(FakeModel(version=2, length=2, hop=2))
    topics = [r.topic for r in producer.delivered]
    assert topics.count(ANOMALIES) == 4 and topics.count(SHADOW) == 0
    value = metrics.registry.get_sample_value
    assert value("seq2gmm_shadow_skipped_windows_total") == 4
    assert value("seq2gmm_shadow_windows_total", {"agreement": "neither"}) == 0


# ----------------------------------------------------------------------------- end to end


@pytest.mark.integration
def test_a_shadow_alias_is_scored_and_published_beside_the_active_one(
    services: Endpoints, unique: str, twolead: tuple[OneClassSplit, Path], tmp_path: Path
) -> None:
    """Two versions in the registry (Seq2GMM active, kNN as ``candidate``), one worker process
    with SEQ2GMM_WORKER__SHADOW_ALIAS=candidate: every window is on both topics, scored by
    its version as offline, the agreement counted, and ``models compare`` reads the same."""
    from model.checkpoint import load_checkpoint, save_checkpoint
    from model.kinds import make_detector

    split, model_dir = twolead
    raw, out, shadow = (f"{t}-{unique}" for t in ("raw", "anom", "shadow"))
    env = worker_env(
        services,
        unique,
        tmp_path / "cache",
        KAFKA__SHADOW_TOPIC=shadow,
        KAFKA__NUM_PARTITIONS="2",
        WORKER__SHADOW_ALIAS="candidate",
    )
    ensure_topics(services.kafka_bootstrap, KafkaSettings(num_partitions=2), [raw])
    knn_dir = save_checkpoint(make_detector("knn").fit(split.train, seed=0), tmp_path / "knn")
    with ModelRegistry(connect(services.redis_url), unique) as registry:
        assert registry.publish_dir(model_dir, "ecg", promote=True) == 1
        assert registry.publish_dir(knn_dir, "ecg") == 2
        registry.set_alias("ecg", "candidate", 2)
    producer = KafkaProducer(bootstrap_servers=services.kafka_bootstrap)
    for sid, m in rows_as_windows(split.test, n_series=4, prefix="ecg", start=0.0):
        producer.send(raw, key=sid.encode(), value=json.dumps(m).encode())
    producer.flush()
    producer.close()

    cli = [sys.executable, "-m", "worker"]
    run = subprocess.run(
        [*cli, "worker", "--model", "ecg", "--stop-at-end"],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    n = len(split.test)
    agreement = summary["shadow"]
    assert summary["scored"] == n and sum(agreement.values()) == n, summary
    assert set(agreement) <= {"both", "active_only", "shadow_only", "neither"}

    main, shadowed = (_scores(services.kafka_bootstrap, t, n) for t in (out, shadow))
    assert {r.model.version for r in main.values()} == {1}
    assert {r.model.version for r in shadowed.values()} == {2}
    assert sorted(main) == sorted(shadowed)  # the same windows
    order = sorted(main, key=lambda k: (k[1], k[0]))  # rows_as_windows: row j*4+k
    offline = load_checkpoint(knn_dir).score(split.test)
    np.testing.assert_allclose([shadowed[k].energy for k in order], offline, rtol=1e-5)
    flags = [(main[k].anomalous, shadowed[k].anomalous) for k in main]
    assert agreement.get("both", 0) == flags.count((True, True))
    assert agreement.get("shadow_only", 0) == flags.count((False, True))

    compare = subprocess.run(
        [*cli, "models", "compare", "ecg", "active", "candidate", "--since", "1h", "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert compare.returncode == 0, compare.stderr[-3000:]
    doc = json.loads(compare.stdout)
    assert (doc["a"]["version"], doc["b"]["version"], doc["windows"]) == (1, 2, n)
    for ours, theirs in (("both", "both"), ("a_only", "active_only"), ("b_only", "shadow_only")):
        assert doc[ours] == agreement.get(theirs, 0), (ours, doc, agreement)
    assert doc["anomaly_rate_b"] == pytest.approx(np.mean([s for _, s in flags]))
    text = subprocess.run(
        [*cli, "models", "compare", "ecg", "1", "candidate"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert f"windows scored by both since 1h: {n}" in text
    assert f"both flagged        {agreement.get('both', 0)}" in text


def _scores(bootstrap: str, topic: str, n: int) -> dict[tuple[str, float], AnomalyRecord]:
    """The records of ``topic`` by (series, window start): all ``n`` of them, each once."""
    records = [
        AnomalyRecord.model_validate_json(r.value or b"")
        for r in read_history(bootstrap, KafkaSettings(), topic, 0)
    ]
    by_window = {(r.series_id, r.window.start): r for r in records}
    assert len(records) == len(by_window) == n
    return by_window


@pytest.mark.integration
def test_the_shadow_source_follows_the_alias_and_stops_when_it_is_removed(
    services: Endpoints, unique: str, twolead: tuple[OneClassSplit, Path]
) -> None:
    import torch

    from worker.registry.alias import AliasModels, alias_watcher
    from worker.registry.watcher import watch_registry

    _, model_dir = twolead
    with ModelRegistry(connect(services.redis_url), unique) as registry:
        registry.publish_dir(model_dir, "ecg", promote=True)
        registry.publish_dir(model_dir, "ecg")
        reader = watch_registry(services.redis_url, unique)
        watcher = alias_watcher(reader, "ecg", "candidate", torch.device("cpu"), 60.0)
        source = AliasModels(watcher)
        try:
            assert source.current() is None  # no such alias yet
            registry.set_alias("ecg", "candidate", 2)
            assert watcher.refresh().serving == 2  # (or the thread, on the pub/sub hint)
            model = source.current()
            assert model is not None and (model.name, model.version) == ("ecg", 2)
            assert watcher.cache is None  # the cache holds the active version only
            registry.remove_alias("ecg", "candidate")
            watcher.refresh()
            assert source.current() is None
        finally:
            watcher.close()
            reader.close()
