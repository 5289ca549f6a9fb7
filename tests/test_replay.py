"""Dataset replay sources for `seq2gmm produce`, and the synthetic generator."""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer

from model.cycles import cut, cycle_windows
from model.evaluation.synthetic import SyntheticConfig, generate
from worker.cli import main
from worker.commands import stream_io
from worker.dev.replay import message_time, rows_as_windows, sample_messages, synthetic_messages
from worker.dev.services import Endpoints
from worker.stream.core import CoreOptions, InRecord, StreamCore
from worker.stream.messages import decode_raw
from worker.stream.testing import CrossingCutter, FakeModel


def test_rows_become_consecutive_windows_of_round_robin_series() -> None:
    rows = [np.arange(4.0) + 10 * i for i in range(5)]
    msgs = list(rows_as_windows(rows, n_series=2, prefix="x", start=100.0, interval=0.5))
    assert [sid for sid, _ in msgs] == ["x-0", "x-1", "x-0", "x-1", "x-0"]
    assert [m["start"] for _, m in msgs] == [100.0, 100.0, 102.0, 102.0, 104.0]
    for _, m in msgs:
        decode_raw(json.dumps(m).encode())  # every message is schema-valid
    assert msgs[2][1]["values"] == [20.0, 21.0, 22.0, 23.0]


def test_synthetic_series_are_seeded_labelled_and_valid() -> None:
    cfg = SyntheticConfig(n_series=2, n_cycles=40, n_features=3, anomaly_rate=0.2, seed=3)
    a, b = generate(cfg), generate(cfg)
    assert all(np.array_equal(x.values, y.values) for x, y in zip(a, b, strict=True))
    s = a[0]
    assert s.values.shape[1] == 3 and len(s.point_labels) == len(s.values)
    assert s.cycle_labels.sum() > 0 and s.cycle_labels[:5].sum() == 0
    for c in np.flatnonzero(s.cycle_labels):  # anomalous cycles carry anomalous points
        end = s.cycle_starts[c + 1] if c + 1 < len(s.cycle_starts) else len(s.values)
        assert s.point_labels[s.cycle_starts[c] : end].any()
    assert not any(k for k, lab in zip(s.cycle_kinds, s.cycle_labels, strict=True) if not lab)
    total = sum(len(m["values"]) for _, m in synthetic_messages(cfg, chunk=50))
    assert total == sum(len(x.values) for x in a)


def test_a_continuous_series_replays_as_single_samples_the_worker_cuts_into_cycles() -> None:
    """The ``produce --mitdb`` path on a synthetic ECG-like series: one message per sample
    with the record's own clock, cut by the worker into the cycles the offline cut finds."""
    series = generate(SyntheticConfig(n_series=1, n_cycles=30, period=40, seed=5))[0]
    x = series.values[:, 0] - np.median(series.values[:, 0])
    t = np.arange(len(x)) / 360.0  # seconds from the record's start, 360 Hz
    msgs = list(sample_messages(t, x, "ecg", start=1_700_000_000.0))
    assert len(msgs) == len(x) and {sid for sid, _ in msgs} == {"ecg"}
    assert [message_time(m) for _, m in msgs[:2]] == [1_700_000_000.0, 1_700_000_000.0 + t[1]]
    records = [
        InRecord("ts.raw", 0, i, b"ecg", json.dumps(m).encode()) for i, (_, m) in enumerate(msgs)
    ]
    cutter = CrossingCutter(level=0.0, lead=4, max_length=120)
    model = FakeModel(cutter=cutter)
    core = StreamCore(model, CoreOptions(max_windows=8, linger_s=0))
    assert core.ingest(records) == []
    while core.ready():
        core.score_batch()
    offline = cycle_windows(x, cut(cutter, x))
    assert len(offline) > 20 and len({len(w) for w in offline}) > 3  # cycles of varying length
    assert len(model.scored) == len(offline)
    for got, want in zip(model.scored, offline, strict=True):
        np.testing.assert_array_equal(got[:, 0], want)


def test_produce_mitdb_replays_one_lead_of_the_record(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--mitdb FOLDER/NAME --lead L`` reads the record with the evaluation's reader (a stand-in
    here: the MIT-BIH parser is tested on the real files with it) and sends lead L."""
    with pytest.raises(SystemExit):
        main(["produce", "--help"])
    usage = capsys.readouterr().out
    assert all(opt in usage for opt in ("--mitdb", "--lead", "--speedup"))
    read: list[tuple[object, str]] = []

    class Record:
        timestamps = np.arange(5) / 360.0

        def lead(self, name: str) -> np.ndarray:
            return np.arange(5.0) * (10 if name == "V5" else 1)

    def read_record(folder: object, name: str) -> Record:
        read.append((folder, name))
        return Record()

    fake = types.ModuleType("model.evaluation.mitdb")
    fake.read_record = read_record  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "model.evaluation.mitdb", fake)
    parser = argparse.ArgumentParser()
    stream_io.register(parser.add_subparsers())
    args = parser.parse_args(["produce", "--mitdb", "data/mitdb/100", "--lead", "V5"])
    msgs, total = stream_io._messages(args, start=100.0)
    assert read == [(Path("data/mitdb"), "100")] and total == 5
    assert list(msgs)[1] == (
        "mitdb-100-V5",
        {"series_id": "mitdb-100-V5", "timestamp": 100.0 + 1 / 360.0, "value": 10.0},
    )


@pytest.mark.integration
def test_produce_command_writes_valid_records(
    services: Endpoints,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS", services.kafka_bootstrap)
    monkeypatch.setenv("SEQ2GMM_REDIS__URL", services.redis_url)
    topic = f"raw-{unique}"
    rc = main(
        [
            "produce",
            "--synthetic",
            "--series",
            "2",
            "--cycles",
            "10",
            "--chunk",
            "32",
            "--topic",
            topic,
            "--start",
            "0",
        ]
    )
    assert rc == 0
    sent = json.loads(capsys.readouterr().out)["messages"]
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=services.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    got = []
    deadline = time.monotonic() + 20
    while len(got) < sent and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            got.extend(batch)
    consumer.close()
    assert len(got) == sent
    assert all(decode_raw(m.value, m.key).series_id.startswith("synthetic-") for m in got)
