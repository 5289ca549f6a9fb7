"""The streaming worker end to end, on the real embedded broker and valkey.

Workers run as real processes (``python -m worker worker``) so that kill -9 and SIGTERM are
the real thing. Every test has its own topics, consumer group and registry key prefix.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from worker_env import worker_env

from model.checkpoint import load_checkpoint
from model.evaluation.data import OneClassSplit
from model.evaluation.metrics import roc_auc
from worker.dev.replay import rows_as_windows, sample_messages
from worker.dev.services import Endpoints
from worker.ops.settings import KafkaSettings
from worker.registry.connection import connect
from worker.registry.store import ModelRegistry
from worker.stream.messages import AnomalyRecord
from worker.stream.topics import ensure_topics

pytestmark = pytest.mark.integration

PARTITIONS = 4
SERIES = 6


class Stream:
    """Topics, group, registry prefix and worker processes of one test."""

    def __init__(self, services: Endpoints, unique: str, cache_dir: Path) -> None:
        self.services = services
        self.raw, self.out, self.dlq = f"raw-{unique}", f"anom-{unique}", f"dlq-{unique}"
        self.env = worker_env(
            services,
            unique,
            cache_dir,
            KAFKA__NUM_PARTITIONS=str(PARTITIONS),
            BATCHING__MAX_WINDOWS="64",
            WORKER__MODEL_POLL_INTERVAL_S="0.5",
        )
        ensure_topics(
            services.kafka_bootstrap,
            KafkaSettings(num_partitions=PARTITIONS),
            [self.raw, self.out, self.dlq],
        )
        self.registry = ModelRegistry(connect(services.redis_url), unique)
        self.procs: list[subprocess.Popen[str]] = []

    def publish(self, model_dir: Path, promote: bool = True) -> int:
        return self.registry.publish_dir(model_dir, "ecg", promote=promote)

    def produce(self, messages: list[tuple[str, bytes]]) -> None:
        producer = KafkaProducer(bootstrap_servers=self.services.kafka_bootstrap)
        for key, value in messages:
            producer.send(self.raw, key=key.encode(), value=value)
        producer.flush()
        producer.close()

    def worker(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "worker", "--model", "ecg", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen[str], timeout: float = 120) -> dict:  # type: ignore[type-arg]
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]
        return json.loads(out.strip().splitlines()[-1])

    def read(self, topic: str, at_least: int = 0, timeout: float = 60) -> list:  # type: ignore[type-arg]
        """Every record of ``topic``; waits (bounded) until at least ``at_least`` arrived."""
        consumer = KafkaConsumer(bootstrap_servers=self.services.kafka_bootstrap)
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        got: list = []  # type: ignore[type-arg]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                got.extend(batch)
            ends = consumer.end_offsets(parts)
            if len(got) >= at_least and all(consumer.position(tp) >= ends[tp] for tp in parts):
                break
        consumer.close()
        return got

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        self.registry.close()


@pytest.fixture
def stream(services: Endpoints, unique: str, tmp_path: Path) -> Iterator[Stream]:
    s = Stream(services, unique, tmp_path / "model-cache")
    yield s
    s.close()


def test_messages(split: OneClassSplit) -> list[tuple[str, bytes]]:
    """The test rows as consecutive windows of SERIES series (row i -> series i % SERIES)."""
    return [
        (sid, json.dumps(m).encode())
        for sid, m in rows_as_windows(split.test, n_series=SERIES, prefix="ecg", start=0.0)
    ]


def row_of(rec: AnomalyRecord, length: int) -> int:
    """Which test row a streamed window is (inverse of rows_as_windows)."""
    k = int(rec.series_id.rsplit("-", 1)[1])
    j = round(rec.window.start / length)
    return j * SERIES + k


test_messages.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def streamed_scores(records: list, split: OneClassSplit) -> dict[int, AnomalyRecord]:  # type: ignore[type-arg]
    length = len(split.test[0])
    by_row: dict[int, AnomalyRecord] = {}
    for m in records:
        rec = AnomalyRecord.model_validate_json(m.value)
        by_row.setdefault(row_of(rec, length), rec)
    return by_row


def test_streamed_scores_equal_offline_evaluation(
    stream: Stream, twolead: tuple[OneClassSplit, Path]
) -> None:
    split, model_dir = twolead
    assert stream.publish(model_dir) == 1
    messages = test_messages(split)
    stream.produce(messages)
    summary = stream.finish(stream.worker("--stop-at-end"))
    assert summary["scored"] == len(split.test) and summary["dead_lettered"] == 0

    records = stream.read(stream.out, at_least=len(split.test))
    ids = [AnomalyRecord.model_validate_json(m.value).id for m in records]
    assert len(ids) == len(set(ids)) == len(split.test)  # every window exactly once
    by_row = streamed_scores(records, split)
    assert sorted(by_row) == list(range(len(split.test)))
    assert {r.model.version for r in by_row.values()} == {1}

    offline = load_checkpoint(model_dir).score(split.test)
    streamed = np.array([by_row[i].energy for i in range(len(split.test))])
    np.testing.assert_allclose(streamed, offline, rtol=1e-5, atol=1e-6)
    auc_streamed = roc_auc(split.test_labels, streamed)
    auc_offline = roc_auc(split.test_labels, offline)
    assert abs(auc_streamed - auc_offline) < 1e-6


def test_kill_minus_9_then_restart_loses_no_window(
    stream: Stream, twolead: tuple[OneClassSplit, Path]
) -> None:
    split, model_dir = twolead
    stream.publish(model_dir)
    stream.env["SEQ2GMM_BATCHING__MAX_WINDOWS"] = "8"  # many small batches and commits
    stream.env["SEQ2GMM_BATCHING__LINGER_MS"] = "0"
    messages = test_messages(split)
    first_part = 2 * len(messages) // 3
    stream.produce(messages[:first_part])
    first = stream.worker()
    records = stream.read(stream.out, at_least=100, timeout=90)
    assert len(records) >= 100, "the worker published nothing before the kill"
    first.send_signal(signal.SIGKILL)  # mid-stream: no drain, no flush, no commit
    first.communicate()
    stream.produce(messages[first_part:])
    summary = stream.finish(stream.worker("--stop-at-end"))
    records = stream.read(stream.out, at_least=len(split.test))
    by_row = streamed_scores(records, split)
    assert sorted(by_row) == list(range(len(split.test)))  # every window has a record
    # the restart resumed from the committed offsets, it did not start over
    assert len(messages) - first_part <= summary["scored"] < len(split.test)
    # at-least-once: windows published after the last commit are published again (same id);
    # with batches of 8 that tail is a few batches at most
    duplicates = len(records) - len(by_row)
    assert 0 <= duplicates <= 8 * PARTITIONS * 2, duplicates


def test_malformed_messages_are_dead_lettered_and_the_worker_stays_up(
    stream: Stream, twolead: tuple[OneClassSplit, Path]
) -> None:
    split, model_dir = twolead
    stream.publish(model_dir)
    rng = np.random.default_rng(0)
    kinds = [
        b"not json",
        b'{"series_id": "ecg-0", "timestamp": 1, "value": NaN}',
        b'{"series_id": "ecg-0", "timestamp": "soon", "value": 1}',
        b'{"series_id": "", "timestamp": 1, "value": 1}',
        b'{"series_id": "ecg-1", "start": 0, "interval": 1, "values": [[1, 2]]}',
        b"\xff\x00\xfe",
        b"[]",
    ]
    bad = [(f"ecg-{i % SERIES}", kinds[int(rng.integers(len(kinds)))]) for i in range(1000)]
    good = test_messages(split)
    mixed: list[tuple[str, bytes]] = []
    for i, msg in enumerate(good):  # interleave ~1.6 bad per good
        mixed.append(msg)
        mixed.extend(bad[i * len(bad) // len(good) : (i + 1) * len(bad) // len(good)])
    assert len(mixed) == len(good) + 1000
    stream.produce(mixed)
    summary = stream.finish(stream.worker("--stop-at-end"))
    assert summary["dead_lettered"] == 1000 and summary["scored"] == len(split.test)
    dead = stream.read(stream.dlq, at_least=1000)
    assert len(dead) == 1000
    for m in dead:
        headers = dict(m.headers)
        assert headers["seq2gmm.error"] and headers["seq2gmm.source.topic"] == stream.raw.encode()
    assert {m.value for m in dead} <= set(kinds)  # the original bytes, unchanged


def test_two_workers_split_the_partitions(
    stream: Stream, twolead: tuple[OneClassSplit, Path]
) -> None:
    split, model_dir = twolead
    stream.publish(model_dir)
    stream.produce(test_messages(split))
    a, b = stream.worker("--stop-at-end"), stream.worker("--stop-at-end")
    sa, sb = stream.finish(a), stream.finish(b)
    records = stream.read(stream.out, at_least=len(split.test))
    assert sorted(streamed_scores(records, split)) == list(range(len(split.test)))
    assert sa["consumed"] + sb["consumed"] >= len(split.test)
    assert sa["consumed"] > 0 and sb["consumed"] > 0, (sa, sb)


def test_promotion_mid_stream(stream: Stream, twolead: tuple[OneClassSplit, Path]) -> None:
    split, model_dir = twolead
    stream.publish(model_dir)
    messages = test_messages(split)
    half = len(messages) // 2
    worker = stream.worker()
    stream.produce(messages[:half])
    assert len(stream.read(stream.out, at_least=half, timeout=90)) >= half
    assert stream.publish(model_dir) == 2  # same weights, a new immutable version
    deadline = time.monotonic() + 30
    while stream.registry.resolve("ecg") != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    # the worker polls the pointer every 0.5 s; produce once it can have seen it
    probe = [(sid, v) for sid, v in messages[half : half + SERIES]]
    stream.produce(probe)
    stream.read(stream.out, at_least=half + len(probe), timeout=60)
    stream.produce(messages[half + SERIES :])
    records = stream.read(stream.out, at_least=len(messages), timeout=90)
    worker.send_signal(signal.SIGTERM)  # graceful: drain, flush, commit, exit 0
    summary = stream.finish(worker)
    assert summary["scored"] == len(messages)
    by_row = streamed_scores(records, split)
    assert sorted(by_row) == list(range(len(split.test)))
    late = [by_row[i].model.version for i in range(half + SERIES, len(split.test))]
    assert set(late) == {2}, "windows produced after the promotion must carry version 2"
    early = [by_row[i].model.version for i in range(half)]
    assert set(early) == {1}


@pytest.mark.parametrize("kind", ["dagmm", "knn"])
def test_serves_another_kind_from_the_registry(
    stream: Stream, twolead: tuple[OneClassSplit, Path], tmp_path: Path, kind: str
) -> None:
    """Other detector kinds (no segments) through the same registry and worker: TS-DAGMM and
    the nearest-cycle knn (its training cycles travel in the checkpoint)."""
    from model.checkpoint import save_checkpoint
    from model.detectors.dagmm import TSDAGMMConfig, TSDAGMMDetector
    from model.kinds import make_detector

    split, _ = twolead
    if kind == "dagmm":
        cfg = TSDAGMMConfig(hidden_size=8, latent_dim=2, epochs=15, patience=None)
        detector: Any = TSDAGMMDetector(cfg).fit(split.train, seed=0)
    else:
        detector = make_detector(kind).fit(split.train, seed=0)
    model_dir = save_checkpoint(detector, tmp_path / kind)
    assert stream.publish(model_dir) == 1
    assert stream.registry.get("ecg", 1).metadata["kind"] == kind
    stream.produce(test_messages(split))
    summary = stream.finish(stream.worker("--stop-at-end"))
    assert summary["scored"] == len(split.test) and summary["dead_lettered"] == 0

    by_row = streamed_scores(stream.read(stream.out, at_least=len(split.test)), split)
    assert sorted(by_row) == list(range(len(split.test)))
    offline = load_checkpoint(model_dir).score(split.test)
    streamed = np.array([by_row[i].energy for i in range(len(split.test))])
    np.testing.assert_allclose(streamed, offline, rtol=1e-5, atol=1e-6)
    length = len(split.test[0])
    for rec in by_row.values():  # one "segment": the whole window
        assert [(s.start_index, s.end_index) for s in rec.segments] == [(0, length - 1)]
        assert rec.model.version == 1 and rec.anomalous == (rec.energy > rec.threshold)


def test_a_records_window_is_read_back_from_its_source_offsets(
    stream: Stream,
    twolead: tuple[OneClassSplit, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`seq2gmm plot window --record R --from-kafka`: the samples come from ts.raw offsets."""
    pytest.importorskip("matplotlib")
    from worker.cli import main
    from worker.stream.readback import ReadbackError, window_samples

    split, model_dir = twolead
    stream.publish(model_dir)
    n = 4 * SERIES  # four windows per series, interleaved on the partitions
    stream.produce(test_messages(split)[:n])
    stream.finish(stream.worker("--stop-at-end"))
    by_row = streamed_scores(stream.read(stream.out, at_least=n), split)
    assert sorted(by_row) == list(range(n))
    kafka = KafkaSettings(bootstrap_servers=stream.services.kafka_bootstrap)
    for row in (0, SERIES + 1, n - 1):
        rec = by_row[row]
        assert rec.samples is None and rec.source is not None and rec.source.topic == stream.raw
        samples = window_samples(rec, stream.services.kafka_bootstrap, kafka)
        np.testing.assert_array_equal(samples[:, 0], split.test[row])
    with pytest.raises(ReadbackError, match="no source offsets"):
        window_samples(by_row[0].model_copy(update={"source": None}), "unused:1", kafka)

    record_file = tmp_path / "alert.json"
    record_file.write_bytes(by_row[2].to_bytes())
    for key in ("SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS", "SEQ2GMM_KAFKA__RAW_TOPIC"):
        monkeypatch.setenv(key, stream.env[key])
    out = tmp_path / "alert.png"
    argv = ["plot", "window", "--record", str(record_file), "--from-kafka", "--out", str(out)]
    assert main(argv) == 0
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"


def test_a_continuous_series_is_cut_by_the_models_cutter_from_its_metadata(
    stream: Stream, twolead: tuple[OneClassSplit, Path], tmp_path: Path
) -> None:
    """Single-sample messages of one continuous series, served by a model whose checkpoint
    carries its ``cycles`` (fixed, hop half the length: not the metadata's window_length/hop):
    every cycle of the offline cut is scored once, with the offline scores."""
    from model.checkpoint import save_checkpoint
    from model.cycles import FixedCutter, cut, cycle_windows

    split, model_dir = twolead
    detector = load_checkpoint(model_dir)
    length = len(split.test[0])
    cutter = FixedCutter(length, length // 2)
    detector.cycles = cutter.to_config()
    assert stream.publish(save_checkpoint(detector, tmp_path / "cycles")) == 1
    x = np.concatenate([np.asarray(r).reshape(-1) for r in split.test[:30]])
    t = np.arange(len(x), dtype=np.float64)
    stream.produce([(sid, json.dumps(m).encode()) for sid, m in sample_messages(t, x, "cont")])
    cycles = cut(cutter, x, t)
    summary = stream.finish(stream.worker("--stop-at-end"))
    assert summary["scored"] == len(cycles) and summary["dead_lettered"] == 0

    records = [AnomalyRecord.model_validate_json(m.value) for m in stream.read(stream.out)]
    by_start = {int(r.window.start): r for r in records}
    assert len(records) == len(by_start) == len(cycles)  # every cycle exactly once
    assert sorted(by_start) == [c.start for c in cycles]
    assert {r.window.n_samples for r in records} == {length}
    offline = detector.score(cycle_windows(x, cycles))
    streamed = np.array([by_start[c.start].energy for c in cycles])
    np.testing.assert_allclose(streamed, offline, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["seq2gmm", "knn"])
def test_an_ecg_record_is_cut_online_by_the_fiducial_cutter(
    stream: Stream, shared_data: Path, tmp_path: Path, kind: str
) -> None:
    """MIT-BIH record 100 (a slice: a minute of MLII to train on, the next half minute streamed
    as single-sample messages): the worker finds the beats online with the model's fiducial
    cutter and scores every cycle of the offline cut once, with the offline scores (knn: beats
    of every length against its resampled training beats)."""
    from dataclasses import replace

    from model.checkpoint import save_checkpoint
    from model.cycles import cut, cycle_windows, fit_fiducial
    from model.detectors.seq2gmm.config import default_config
    from model.detectors.seq2gmm.detector import Seq2GMMDetector
    from model.evaluation.mitdb import read_record
    from model.kinds import make_detector

    record = read_record(shared_data / "mitdb", "100")
    x, t = record.lead("MLII"), record.timestamps
    train, test = slice(0, 360 * 60), slice(360 * 60, 360 * 90)
    cutter = fit_fiducial([x[train]])
    if kind == "seq2gmm":
        cfg = default_config()
        detector: Any = Seq2GMMDetector(cfg.replace(train=replace(cfg.train, epochs=3)))
    else:
        detector = make_detector(kind)
    detector.fit(cycle_windows(x[train], cut(cutter, x[train], t[train])), seed=0)
    detector.cycles = cutter.to_config()
    assert stream.publish(save_checkpoint(detector, tmp_path / "ecg")) == 1

    xs, ts = x[test], t[test]
    stream.produce([(sid, json.dumps(m).encode()) for sid, m in sample_messages(ts, xs, "ecg")])
    cycles = cut(cutter, xs, ts)
    assert len(cycles) > 25  # about 1.3 beats a second
    summary = stream.finish(stream.worker("--stop-at-end"))
    assert summary["scored"] == len(cycles) and summary["dead_lettered"] == 0

    records = [AnomalyRecord.model_validate_json(m.value) for m in stream.read(stream.out)]
    by_start = {round(float(r.window.start) * 360): r for r in records}
    starts = [round(float(ts[c.start]) * 360) for c in cycles]
    assert len(records) == len(by_start) == len(cycles)  # every cycle exactly once
    assert sorted(by_start) == starts
    assert [by_start[s].window.n_samples for s in starts] == [len(c) for c in cycles]
    offline = detector.score(cycle_windows(xs, cycles))
    streamed = np.array([by_start[s].energy for s in starts])
    np.testing.assert_allclose(streamed, offline, rtol=1e-5, atol=1e-6)
