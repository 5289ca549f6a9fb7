"""Dataset replay sources for `seq2gmm produce`, and the synthetic generator."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from kafka import KafkaConsumer

from model.evaluation.synthetic import SyntheticConfig, generate
from worker.cli import main
from worker.dev.replay import rows_as_windows, synthetic_messages
from worker.dev.services import Endpoints
from worker.stream.messages import decode_raw


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
