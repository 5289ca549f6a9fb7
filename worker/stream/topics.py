"""Kafka topic administration: create the project's topics when they are missing."""

from __future__ import annotations

import contextlib

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from worker.errors import ConfigError, ServiceError
from worker.ops.settings import KafkaSettings


def project_topics(kafka: KafkaSettings) -> list[str]:
    return [kafka.raw_topic, kafka.anomalies_topic, kafka.dead_letter_topic, kafka.shadow_topic]


def _admin(bootstrap: str, kafka: KafkaSettings) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id=f"{kafka.client_id}-admin",
            **kafka.client_options(),
        )
    except KafkaError as exc:
        raise ServiceError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc


def ensure_topics(
    bootstrap: str, kafka: KafkaSettings, topics: list[str] | None = None
) -> list[str]:
    """Create missing topics with the configured partition count; returns the ones created."""
    wanted = topics if topics is not None else project_topics(kafka)
    admin = _admin(bootstrap, kafka)
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


def require_partitions(bootstrap: str, kafka: KafkaSettings, topic: str, like: str) -> int:
    """The partition count of ``topic``; raises ConfigError when it has fewer than ``like``
    (incident records go to the partition number of their input partition)."""
    admin = _admin(bootstrap, kafka)
    try:
        described = admin.describe_topics([topic, like])
        # the metadata's key for the name: "name" (newer MetadataResponse) or "topic"
        counts = {t.get("name", t.get("topic")): len(t["partitions"]) for t in described}
    except KafkaError as exc:
        raise ServiceError(f"cannot describe topics {topic}, {like}: {exc}") from exc
    finally:
        admin.close()
    if counts.get(topic, 0) < counts.get(like, 0):
        raise ConfigError(
            f"{topic} has {counts.get(topic, 0)} partitions, fewer than {like}'s"
            f" {counts.get(like, 0)}: incidents are published to the partition number of their"
            f" input partition; add partitions (kafka-topics --alter --topic {topic}"
            f" --partitions {counts.get(like, 0)}) or disable incidents"
            " (SEQ2GMM_INCIDENTS__ENABLED=false)"
        )
    return counts[topic]
