"""Kafka clients built from the settings (security options included)."""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from worker.errors import ServiceError
from worker.ops.settings import KafkaSettings
from worker.stream.messages import MAX_MESSAGE_BYTES

MAX_REQUEST_BYTES = MAX_MESSAGE_BYTES + 64 * 1024  # topics need max.message.bytes >= this


def make_producer(bootstrap: str, kafka: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """Idempotent producer, acks=all: a retried send never duplicates or reorders records."""
    opts: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": f"{kafka.client_id}-producer",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        # a dead letter is an input record (<= 1 MiB, the schema's limit) plus headers
        "max_request_size": MAX_REQUEST_BYTES,
        **kafka.client_options(),
    }
    opts.update(overrides)
    try:
        return KafkaProducer(**opts)
    except KafkaError as exc:
        raise ServiceError(f"cannot connect a producer to Kafka at {bootstrap}: {exc}") from exc


def make_consumer(bootstrap: str, kafka: KafkaSettings, **overrides: Any) -> KafkaConsumer:
    """Consumer with manual commits and the configured group timing."""
    opts: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": kafka.client_id,
        "group_id": kafka.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": kafka.auto_offset_reset,
        "max_poll_interval_ms": kafka.max_poll_interval_ms,
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": kafka.heartbeat_interval_ms,
        "max_poll_records": kafka.max_poll_records,
        **kafka.client_options(),
    }
    opts.update(overrides)
    try:
        return KafkaConsumer(**opts)
    except KafkaError as exc:
        raise ServiceError(f"cannot connect a consumer to Kafka at {bootstrap}: {exc}") from exc
