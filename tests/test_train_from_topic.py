"""``seq2gmm train --from-topic``: a KPI network series produced to the real embedded broker
with its samples' times as message timestamps, read back by time range, gives the model that
training from a CSV file of the same samples gives (same seed: bit-identical scores)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer
from safetensors.numpy import load_file

from model.checkpoint import load_checkpoint
from model.cycles import cut, cutter_from_config, cycle_windows
from model.evaluation.data import load_series_csv
from worker.cli import main
from worker.dev.services import Endpoints
from worker.ops.settings import KafkaSettings
from worker.registry.connection import connect
from worker.registry.store import ModelRegistry
from worker.stream.messages import AnomalyRecord, ModelRef, WindowRef
from worker.stream.topics import ensure_topics

pytestmark = pytest.mark.integration

DAY = 288  # 5-minute samples
SERIES = "router-7/eth1/out"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


@pytest.fixture
def kpi_rows(shared_data: Path) -> list[tuple[str, str]]:
    path = shared_data / "kpi" / "server_res_eth1out_curve_6.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found (the KPI network series of ../shared/data/kpi)")
    lines = path.read_text().splitlines()[1:]
    return [(t, v) for t, v, _ in (line.split(",") for line in lines[: 12 * DAY])]


def _produce(bootstrap: str, topic: str, rows: list[tuple[str, str]]) -> None:
    """Day 0 to 11 of the series, one sample a message stamped with the sample's time; a
    series the pattern leaves out and an undecodable record inside the time range."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i, (t, v) in enumerate(rows):
        ms = int(t) * 1000
        msg = {"series_id": SERIES, "timestamp": int(t), "value": float(v)}
        producer.send(topic, json.dumps(msg).encode(), key=SERIES.encode(), timestamp_ms=ms)
        if i % 50 == 0:
            other = {"series_id": "server-3/cpu", "timestamp": int(t), "value": 1.0}
            producer.send(topic, json.dumps(other).encode(), key=b"server-3/cpu", timestamp_ms=ms)
        if i == 5 * DAY:
            producer.send(topic, b"{not json", key=SERIES.encode(), timestamp_ms=ms)
    producer.flush()
    producer.close()


def test_training_from_the_topic_equals_training_from_the_csv(
    services: Endpoints,
    unique: str,
    kpi_rows: list[tuple[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    raw, anomalies = f"raw-{unique}", f"anom-{unique}"
    for name, value in {
        "SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS": services.kafka_bootstrap,
        "SEQ2GMM_REDIS__URL": services.redis_url,
        "SEQ2GMM_REDIS__KEY_PREFIX": unique,
        "SEQ2GMM_KAFKA__ANOMALIES_TOPIC": anomalies,
        "SEQ2GMM_DEVICE": "cpu",
    }.items():
        monkeypatch.setenv(name, value)
    ensure_topics(services.kafka_bootstrap, KafkaSettings(num_partitions=2), [raw, anomalies])
    _produce(services.kafka_bootstrap, raw, kpi_rows)
    # the training range: days 1 to 10 (the topic holds a day more on each side)
    inside = kpi_rows[DAY : 11 * DAY]
    csv = tmp_path / "eth1.csv"
    csv.write_text("timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in inside))
    since, until = _iso(float(inside[0][0])), _iso(float(kpi_rows[11 * DAY][0]))
    common = ["--cycles", "period:86400", "--epochs", "2", "--seed", "0", "--json"]

    topic_args = ["--from-topic", raw, "--series", "router-*/eth1/*", "--since", since]
    argv = ["train", *topic_args, "--until", until, "--out", str(tmp_path / "topic"), *common]
    assert main([*argv, "--publish", "eth1", "--alias", "candidate"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert summary["version"] == 1 and summary["alias"] == "candidate"
    assert "1 records skipped" in out.err and "invalid_message" in out.err
    assert main(["train", "--train", str(csv), "--out", str(tmp_path / "csv"), *common]) == 0
    assert json.loads(capsys.readouterr().out)["windows"] == summary["windows"] == 9

    from_topic, from_csv = load_checkpoint(tmp_path / "topic"), load_checkpoint(tmp_path / "csv")
    data = from_topic.training_summary
    assert data["series"] == [SERIES] and data["samples"] == len(inside)
    assert data["skipped_records"] == {"invalid_message": 1}
    assert from_topic.cycles == from_csv.cycles
    series = load_series_csv(csv)
    cycles = cut(cutter_from_config(from_csv.cycles), series.values, series.timestamps)
    windows = cycle_windows(series.values, cycles)
    a, b = from_topic.score(windows), from_csv.score(windows)
    assert np.array_equal(a, b), np.abs(a - b).max()  # bit-identical
    assert from_topic.threshold.value == from_csv.threshold.value
    tensors = [load_file(tmp_path / d / "weights.safetensors") for d in ("topic", "csv")]
    assert sorted(tensors[0]) == sorted(tensors[1])
    assert all(np.array_equal(v, tensors[1][k]) for k, v in tensors[0].items())
    with ModelRegistry(connect(services.redis_url), unique) as registry:
        assert registry.aliases("eth1") == {"candidate": 1}  # active untouched

    # --exclude-flagged: a cycle the served model flagged is left out
    flagged_start = float(series.timestamps[cycles[3].start])
    record = AnomalyRecord(
        id="x",
        series_id=SERIES,
        model=ModelRef(name="eth1", version=1),
        window=WindowRef(start=flagged_start, end=flagged_start + 1, n_samples=DAY),
        energy=9.0,
        threshold=1.0,
        anomalous=True,
        percentile=100.0,
        segments=[],
        scored_at=0.0,
    )
    producer = KafkaProducer(bootstrap_servers=services.kafka_bootstrap)
    producer.send(anomalies, record.to_bytes(), key=SERIES.encode())
    producer.flush()
    producer.close()
    argv = ["train", *topic_args, "--out", str(tmp_path / "excl"), *common, "--epochs", "1"]
    assert main([*argv, "--exclude-flagged", "--publish", "eth1"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["windows"] == 10 - 1  # no --until: day 11 is in, cycle 3 out
    assert "1 flagged by the model left out" in out.err


def test_clear_errors(
    services: Endpoints, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS", services.kafka_bootstrap)
    raw = f"raw-{unique}"
    ensure_topics(services.kafka_bootstrap, KafkaSettings(num_partitions=1), [raw])
    base = ["train", "--from-topic", raw, "--out", str(tmp_path / "m")]
    assert main([*base, "--cycles", "fixed:8"]) == 1  # no --since
    assert main([*base, "--since", "1d"]) == 1  # no --cycles
    assert main([*base, "--since", "1d", "--cycles", "fixed:8", "--window", "8"]) == 1
    assert main([*base, "--since", "yesterday", "--cycles", "fixed:8"]) == 1
    assert main([*base, "--since", "1d", "--cycles", "fixed:8"]) == 1  # empty topic
    assert main([*base, "--since", "1d", "--cycles", "fixed:8", "--alias", "candidate"]) == 1


def test_series_from_records_skips_as_the_worker_does() -> None:
    """Undecodable records and a width change are skipped and counted; a sample not after its
    series' previous ones is dropped (the windower drops it); only matching series are kept."""
    from worker.stream.history import HistoryRecord
    from worker.stream.series_history import series_from_records

    def rec(offset: int, value: bytes) -> HistoryRecord:
        return HistoryRecord("raw", 0, offset, 0, None, value)

    def chunk(sid: str, start: float, values: list) -> bytes:  # type: ignore[type-arg]
        msg = {"series_id": sid, "start": start, "interval": 1, "values": values}
        return json.dumps(msg).encode()

    got = series_from_records(
        [
            rec(0, chunk("a/1", 0, [1.0, 2.0, 3.0])),
            rec(1, chunk("b/1", 0, [9.0])),
            rec(2, chunk("a/1", 2, [30.0, 4.0])),  # t=2 again: dropped; t=3 kept
            rec(3, b"\xff"),
            rec(4, chunk("a/1", 4, [[5.0, 5.0]])),  # two values a sample: skipped
        ],
        "a/*",
    )
    assert list(got.series) == ["a/1"]
    np.testing.assert_array_equal(got.series["a/1"].timestamps, [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(got.series["a/1"].values, [1.0, 2.0, 3.0, 4.0])
    assert got.skipped == {"invalid_message": 1, "wrong_width": 1}
    assert (got.records, got.matched_records, got.dropped_samples) == (5, 3, 1)
