"""Kafka topic administration: create the project's topics when they are missing."""

from __future__ import annotations

import contextlib

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from worker.errors import ServiceError
from worker.ops.settings import KafkaSettings


def project_topics(kafka: KafkaSettings) -> list[str]:
    return [kafka.raw_topic, kafka.anomalies_topic, kafka.dead_letter_topic, kafka.shadow_topic]


def ensure_topics(
    bootstrap: str, kafka: KafkaSettings, topics: list[str] | None = None
) -> list[str]:
    """Create missing topics with the configured partition count; returns the ones created."""
    wanted = topics if topics is not None else project_topics(kafka)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id=f"{kafka.client_id}-admin",
            **kafka.client_options(),
        )
    except KafkaError as exc:
        raise ServiceError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            new = [
                NewTopic(
                    t,
                    num_partitions=kafka.num_partitions,
                    replication_factor=kafka.replication_factor,
                )
                for t in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):  # created by a peer meanwhile
                admin.create_topics(new)
        return missing
    except KafkaError as exc:
        raise ServiceError(f"cannot create topics {wanted} on {bootstrap}: {exc}") from exc
    finally:
        admin.close()
