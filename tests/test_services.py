"""The embedded services are real: Kafka protocol via kafka-python, Redis protocol via redis-py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from worker.dev.services import Endpoints, ValkeyServer, free_port
from worker.errors import ServiceError
from worker.ops.settings import KafkaSettings
from worker.stream.topics import ensure_topics

pytestmark = pytest.mark.integration


def consume(consumer: KafkaConsumer, n: int, timeout_s: float = 30.0) -> list:  # type: ignore[type-arg]
    """Poll until ``n`` records arrived (or fail after ``timeout_s``: an event, not a sleep)."""
    records: list = []  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout_s
    while len(records) < n and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    assert len(records) >= n, f"only {len(records)} of {n} records arrived in {timeout_s} s"
    return records


def test_produce_and_consume_with_a_consumer_group(services: Endpoints, unique: str) -> None:
    kafka = KafkaSettings(raw_topic=f"raw-{unique}", num_partitions=3)
    created = ensure_topics(services.kafka_bootstrap, kafka, [kafka.raw_topic])
    assert created == [kafka.raw_topic]
    assert ensure_topics(services.kafka_bootstrap, kafka, [kafka.raw_topic]) == []  # idempotent

    producer = KafkaProducer(
        bootstrap_servers=services.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    for i in range(30):
        producer.send(kafka.raw_topic, key=f"s{i % 5}".encode(), value=f"{i}".encode())
    producer.flush()
    producer.close()

    def group_consumer() -> KafkaConsumer:
        return KafkaConsumer(
            kafka.raw_topic,
            bootstrap_servers=services.kafka_bootstrap,
            group_id=f"g-{unique}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=10_000,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )

    consumer = group_consumer()
    records = consume(consumer, 30)
    assert sorted(int(r.value) for r in records) == list(range(30))
    # one series (key) always lands on one partition, in order
    by_key: dict[bytes, set[int]] = {}
    for r in records:
        by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in by_key.values())
    consumer.commit()
    committed = {tp.partition: consumer.committed(tp) for tp in consumer.assignment()}
    consumer.close()
    ends = {p: 0 for p in range(3)}
    for r in records:
        ends[r.partition] = max(ends[r.partition], r.offset + 1)
    assert committed == ends

    # the group resumes after its committed offsets: new records only
    producer = KafkaProducer(bootstrap_servers=services.kafka_bootstrap)
    producer.send(kafka.raw_topic, key=b"s0", value=b"30").get(timeout=10)
    producer.close()
    again = group_consumer()
    assert [int(r.value) for r in consume(again, 1)] == [30]
    again.close()


def test_manual_partition_assignment_reads_from_offsets(services: Endpoints, unique: str) -> None:
    topic = f"raw-{unique}"
    ensure_topics(services.kafka_bootstrap, KafkaSettings(num_partitions=1), [topic])
    producer = KafkaProducer(bootstrap_servers=services.kafka_bootstrap)
    for i in range(5):
        producer.send(topic, value=str(i).encode())
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=services.kafka_bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, 2)
    assert [int(r.value) for r in consume(consumer, 3)] == [2, 3, 4]
    consumer.close()


def test_redis_read_write(services: Endpoints, unique: str) -> None:
    client = redis.Redis.from_url(services.redis_url)
    key = f"{unique}:weights"
    client.set(key, b"\x00\x01binary")
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(f"{unique}:meta", mapping={"version": 1}).incr(f"{unique}:counter")
        pipe.execute()
    assert client.get(key) == b"\x00\x01binary"
    assert client.hget(f"{unique}:meta", "version") == b"1"
    client.close()


def test_valkey_persists_through_a_restart(tmp_path: Path) -> None:
    server = ValkeyServer(tmp_path, "127.0.0.1", free_port())
    server.start(timeout_s=30)
    client = redis.Redis.from_url(server.url)
    client.set("model:active", "7")
    client.close()
    server.stop()  # SIGTERM: valkey flushes its append-only file
    assert list((tmp_path / "valkey").rglob("*.aof"))
    server.start(timeout_s=30)
    client = redis.Redis.from_url(server.url)
    assert client.get("model:active") == b"7"
    client.close()
    server.stop()


def test_taken_port_is_reported_clearly(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(ServiceError, match=rf"port {port}.*SEQ2GMM_DEV__REDIS_PORT"):
            ValkeyServer(tmp_path, "127.0.0.1", port).start(timeout_s=5)


def test_dev_cli_up_status_down(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SEQ2GMM_DEV__DATA_DIR": str(tmp_path / "dev"),
        "SEQ2GMM_DEV__KAFKA_PORT": str(free_port()),
        "SEQ2GMM_DEV__REDIS_PORT": str(free_port()),
        "SEQ2GMM_KAFKA__NUM_PARTITIONS": "2",
    }
    env.pop("SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS", None)
    env.pop("SEQ2GMM_REDIS__URL", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    try:
        up = cli("dev", "up", "--json")
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout)
        assert info["kafka_bootstrap"] == f"127.0.0.1:{env['SEQ2GMM_DEV__KAFKA_PORT']}"
        created = sorted(info["topics_created"])
        assert created == ["ts.anomalies", "ts.anomalies.shadow", "ts.raw", "ts.raw.dlq"]
        assert cli("dev", "up").returncode == 0  # idempotent
        status = json.loads(cli("dev", "status", "--json").stdout)
        assert status["kafka"]["answering"] and status["redis"]["answering"]
        assert status["redis_url"] == f"redis://127.0.0.1:{env['SEQ2GMM_DEV__REDIS_PORT']}/0"
        # other commands find the running services without any endpoint configured
        worker = cli("worker", "--model", "nothing-published", "--model-wait", "0")
        assert worker.returncode == 1 and "no active model" in worker.stderr
    finally:
        down = cli("dev", "down")
    assert down.returncode == 0 and "stopped: kafka, redis" in down.stdout
    status = json.loads(cli("dev", "status", "--json").stdout)
    assert not status["kafka"]["running"] and not status["redis"]["running"]
    no_services = cli("worker")
    assert no_services.returncode == 1 and "SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS" in no_services.stderr


def test_the_workers_consumer_holds_a_fetch_at_most_fetch_max_wait_ms(
    services: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kafka-python's 500 ms default held every record on the embedded broker for 130-260 ms
    (docs/benchmarks.md): the worker's consumer takes the setting (default 50 ms, env)."""
    from worker.ops.settings import load_settings
    from worker.stream.kafka_clients import make_consumer

    assert KafkaSettings().fetch_max_wait_ms == 50
    monkeypatch.setenv("SEQ2GMM_KAFKA__FETCH_MAX_WAIT_MS", "120")
    kafka = load_settings().kafka
    consumer = make_consumer(services.kafka_bootstrap, kafka, group_id=None)
    try:
        assert consumer.config["fetch_max_wait_ms"] == 120
    finally:
        consumer.close()
