"""Resolve where Kafka and Redis are: configured endpoints first, else the embedded dev ones."""

from __future__ import annotations

from worker.dev.services import DevServices, Endpoints
from worker.errors import ConfigError
from worker.ops.settings import Settings


def configured(settings: Settings) -> tuple[str | None, str | None]:
    """(bootstrap servers, Redis URL) as configured; None where left to the embedded services."""
    redis_url = settings.redis.url.get_secret_value() if settings.redis.url else None
    return settings.kafka.bootstrap_servers, redis_url


def resolve_redis_url(settings: Settings) -> str:
    """The configured Redis URL, else the running embedded valkey (Kafka is not needed)."""
    _, redis_url = configured(settings)
    if redis_url is not None:
        return redis_url
    return _embedded(settings, "redis", "Redis", "SEQ2GMM_REDIS__URL")


def resolve_kafka(settings: Settings) -> str:
    """The configured bootstrap servers, else the running embedded broker (Redis not needed)."""
    kafka, _ = configured(settings)
    return kafka or _embedded(settings, "kafka", "Kafka broker", "SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS")


def _embedded(settings: Settings, service: str, what: str, variable: str) -> str:
    """The URL of the running embedded ``service``; a ConfigError saying what to do if none."""
    embedded = getattr(DevServices(settings.dev), service)
    if not embedded.running():
        raise ConfigError(
            f"no {what} configured: set {variable}, or start the embedded one"
            " with `seq2gmm dev up` (make run-worker does it for you)"
        )
    return str(embedded.url)


def resolve_endpoints(settings: Settings) -> Endpoints:
    """The endpoints to use; raises ConfigError saying what to set when neither is available."""
    return Endpoints(kafka_bootstrap=resolve_kafka(settings), redis_url=resolve_redis_url(settings))
