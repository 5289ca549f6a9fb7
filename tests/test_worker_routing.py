"""Two models in one worker, routed by the table in Redis, on the real embedded services: each
series scored by its own model as offline, a route change taking effect while the worker runs
with nothing lost, and a series with no route dead-lettered with the reason."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from worker_env import worker_env

from model.checkpoint import load_checkpoint, save_checkpoint
from model.detectors.nearest import NearestCycleDetector
from model.evaluation.data import OneClassSplit
from worker.dev.replay import rows_as_windows
from worker.dev.services import Endpoints
from worker.ops.settings import KafkaSettings
from worker.registry.connection import connect
from worker.registry.routes import RouteStore
from worker.registry.store import ModelRegistry
from worker.stream.envelopes import ERROR_HEADER
from worker.stream.messages import AnomalyRecord
from worker.stream.topics import ensure_topics

pytestmark = pytest.mark.integration

PARTITIONS = 2


def read_all(bootstrap: str, topic: str, until: Any, timeout: float = 90) -> list[Any]:
    """Every record of ``topic``, re-read until ``until(records)`` holds (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap)
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        got: list[Any] = []
        while True:
            batch = consumer.poll(timeout_ms=300)
            if not batch:
                break
            for msgs in batch.values():
                got += msgs
        consumer.close()
        if until(got) or time.monotonic() > deadline:
            return got


def probe_record(bootstrap: str, topic: str, start: float) -> AnomalyRecord:
    """The record of the probe window starting at ``start``, once published."""

    def found(got: list[Any]) -> AnomalyRecord | None:
        for m in got:
            r = AnomalyRecord.model_validate_json(m.value)
            if r.series_id == "sw-1-probe" and r.window.start == start:
                return r
        return None

    got = read_all(bootstrap, topic, lambda g: found(g) is not None)
    rec = found(got)
    assert rec is not None, "the probe window was not scored"
    return rec


def test_two_models_routed_by_prefix_and_a_live_route_change(
    services: Endpoints, unique: str, tmp_path: Path, twolead: tuple[OneClassSplit, Path]
) -> None:
    split, seq_dir = twolead
    knn_dir = tmp_path / "knn"
    save_checkpoint(NearestCycleDetector().fit(split.train, seed=0), knn_dir)
    raw, out, dlq = f"raw-{unique}", f"anom-{unique}", f"dlq-{unique}"
    ensure_topics(
        services.kafka_bootstrap, KafkaSettings(num_partitions=PARTITIONS), [raw, out, dlq]
    )
    registry = ModelRegistry(connect(services.redis_url), unique)
    registry.publish_dir(seq_dir, "links", promote=True)
    registry.publish_dir(knn_dir, "cpu", promote=True)
    routes = RouteStore(registry)
    routes.add("core-", "links")
    routes.add("sw-*", "cpu")
    env = worker_env(
        services,
        unique,
        tmp_path / "cache",
        ROUTING__ENABLED="true",
        WORKER__MODEL_POLL_INTERVAL_S="0.3",
    )
    rows = split.test[:72]
    core = list(rows_as_windows(rows[:24], n_series=2, prefix="core"))
    sw = list(rows_as_windows(rows[24:72], n_series=2, prefix="sw"))
    producer = KafkaProducer(bootstrap_servers=services.kafka_bootstrap)

    def send(messages: list[tuple[str, dict[str, Any]]]) -> None:
        for sid, body in messages:
            producer.send(raw, key=sid.encode(), value=json.dumps(body).encode())
        producer.flush()

    first_half = core[:12] + sw[:24]
    send(first_half)
    send([("lost-1", {"series_id": "lost-1", "timestamp": 1.0, "value": 2.0})])
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "worker"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        read_all(services.kafka_bootstrap, out, lambda got: len(got) >= len(first_half))
        routes.add("sw-1", "links", position=0)  # sw-1 now goes to links
        for k in range(60):  # a probe series under sw-1: its windows show the change served
            start = k * float(len(rows[0]))
            send([("sw-1-probe", {"series_id": "sw-1-probe", "start": start, "interval": 1,
                                  "values": rows[0].tolist()})])  # fmt: skip
            probe = probe_record(services.kafka_bootstrap, out, start)
            if probe.model.name == "links":
                break
        second_half = core[12:] + sw[24:]
        send(second_half)
        total = len(first_half) + len(second_half)
        got = read_all(
            services.kafka_bootstrap, out,
            lambda g: sum(1 for m in g if b"probe" not in m.key) >= total,
        )  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        producer.close()
    assert proc.returncode == 0, err[-3000:]
    recs = [AnomalyRecord.model_validate_json(m.value) for m in got if b"probe" not in m.key]
    assert len(recs) == total and len({r.id for r in recs}) == total  # each window once

    # each window scored by its routed model, as offline
    offline = {"links": load_checkpoint(seq_dir), "cpu": load_checkpoint(knn_dir)}
    length = len(rows[0])
    index = {sid: [] for sid in ("core-0", "core-1", "sw-0", "sw-1")}  # type: dict[str, list[int]]
    for i in range(24):
        index[f"core-{i % 2}"].append(i)
    for i in range(48):
        index[f"sw-{i % 2}"].append(24 + i)
    switched = 0
    for r in recs:
        row = index[r.series_id][round(r.window.start / length)]
        if r.series_id.startswith("core-"):
            assert r.model.name == "links"
        elif r.series_id == "sw-0" or r.window.start < 12 * length:  # sent before the change
            assert r.model.name == "cpu", (r.series_id, r.window.start)
        else:
            assert r.model.name == "links", (r.series_id, r.window.start)
            switched += 1
        want = offline[r.model.name].score([rows[row]])[0]
        np.testing.assert_allclose(r.energy, want, rtol=1e-5, atol=1e-6)
    assert switched == 12

    dead = read_all(services.kafka_bootstrap, dlq, lambda g: len(g) >= 1)
    reasons = [dict(m.headers)[ERROR_HEADER].decode() for m in dead]
    assert len(reasons) == 1 and "no route for series 'lost-1'" in reasons[0]
    registry.close()
