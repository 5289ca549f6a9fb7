"""All configuration, in one pydantic-settings tree.

Every field can be set from the environment with the prefix ``SEQ2GMM_`` and ``__`` between
levels, e.g. ``SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS=kafka-1:9092`` or
``SEQ2GMM_BATCHING__MAX_WINDOWS=512``. Invalid values fail at start with a
:class:`~worker.errors.ConfigError` that names the variable to fix.

Kafka and Redis endpoints left unset mean "use the embedded development services"
(``seq2gmm dev up``); see :func:`worker.dev.endpoints.resolve_endpoints`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import ConfigError

ENV_PREFIX = "SEQ2GMM_"
ENV_DELIMITER = "__"


class KafkaSettings(BaseModel):
    """Where the stream lives and how the consumer group behaves."""

    bootstrap_servers: str | None = Field(
        default=None,
        description="Comma-separated host:port list; unset = the embedded dev broker.",
    )
    raw_topic: str = "ts.raw"
    anomalies_topic: str = "ts.anomalies"
    dead_letter_topic: str = "ts.raw.dlq"
    shadow_topic: str = "ts.anomalies.shadow"  # records of the shadow alias's model
    group_id: str = "seq2gmm-worker"
    client_id: str = "seq2gmm-worker"
    # The consumer's rebalance timeout. Besides bounding one poll-to-poll cycle it sets how
    # long a group join takes on the embedded tansu broker (~5 s at 10-30 s here; ~23 s at
    # kafka-python's 300 s default), so keep it modest; one scoring batch stays far inside.
    max_poll_interval_ms: int = Field(default=30_000, ge=1_000, le=3_600_000)
    # 6 s: the smallest Apache Kafka accepts by default (group.min.session.timeout.ms). A
    # worker killed with SIGKILL holds its partitions until its session times out; the
    # restarted one joins once its process is session/2 + 0.5 s old (kafka_clients), by when
    # the dead member has expired: restart -> first new record 6.8-6.95 s measured (up to 14 s
    # before that wait, ~18 s with a 10 s session; docs/reliability.md).
    session_timeout_ms: int = Field(default=6_000, ge=1_000, le=300_000)
    heartbeat_interval_ms: int = Field(default=2_000, ge=100, le=60_000)
    group_instance_id: str = Field(
        default="none",
        pattern=r"^(|auto|none|[A-Za-z0-9._-]{1,200})$",
        description="static group membership (KIP-345): none or empty = dynamic (default;"
        " the faster recovery on the embedded broker, measured); auto = the hostname plus a"
        " per-host slot (stable across container restarts); anything else = this id, which"
        " must be unique per replica (e.g. a StatefulSet pod name).",
    )
    max_poll_records: int = Field(default=500, ge=1, le=100_000)
    # How long the broker may hold a fetch that has no new record. kafka-python's default (500
    # ms) adds 130 ms (p50) to 260 ms (max) to every record's latency on the embedded tansu,
    # which holds a fetch while records arrive; 50 ms costs ~20 empty fetches a second when
    # idle (docs/benchmarks.md, "Latency at half load"). On tansu 10 ms cut a bare consumer's
    # p99 at 22,500 msg/s from 74-113 to 22-37 ms, but an idle consumer then took 8.8 % of a
    # core against 3.3 %: a real broker answers a fetch as soon as records arrive, so 50 stays.
    fetch_max_wait_ms: int = Field(default=50, ge=0, le=10_000)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # Partitions for topics this project creates (dev services, tests, `topics create`).
    num_partitions: int = Field(default=4, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=16)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            missing = [
                name
                for name, value in (
                    ("SASL_MECHANISM", self.sasl_mechanism),
                    ("SASL_USERNAME", self.sasl_username),
                    ("SASL_PASSWORD", self.sasl_password),
                )
                if value is None
            ]
            if missing:
                names = ", ".join(f"{ENV_PREFIX}KAFKA__{m}" for m in missing)
                raise ValueError(f"security_protocol {self.security_protocol} also needs {names}")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be smaller than session_timeout_ms")
        if self.session_timeout_ms > self.max_poll_interval_ms:
            raise ValueError("session_timeout_ms must not exceed max_poll_interval_ms")
        return self

    def client_options(self) -> dict[str, Any]:
        """Security options in kafka-python's keyword names (only the ones that are set)."""
        opts: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, key)
            if value is not None:
                opts[key] = str(value)
        return opts


class RedisSettings(BaseModel):
    """The model registry's Redis (or valkey). ``rediss://`` URLs use TLS."""

    url: SecretStr | None = Field(
        default=None,
        description="redis://[:password@]host:port/db or rediss://...; unset = embedded valkey.",
    )
    key_prefix: str = Field(default="seq2gmm", min_length=1, max_length=64, pattern=r"^[\w.:-]+$")


ScoringMode = Literal["auto", "inline", "thread", "process"]


class BatchingSettings(BaseModel):
    """Microbatching of ready windows before scoring."""

    max_windows: int = Field(default=256, ge=1, le=65_536)
    linger_ms: int = Field(default=50, ge=0, le=60_000)
    scoring: ScoringMode = Field(
        default="auto",
        description="where batches are scored: on the poll loop's thread, on a scoring thread,"
        " or in a scoring process (waited for by the scoring thread) that uses another core;"
        " auto = process for a one-model worker on CPU with >= 2 usable cores, else thread"
        " (worker.stream.core_settings.scoring_mode)",
    )
    scoring_thread: bool | None = Field(
        default=None,
        description="deprecated alias of scoring: true = thread, false = inline (scoring wins)",
    )

    @model_validator(mode="after")
    def _scoring_alias(self) -> BatchingSettings:
        if self.scoring_thread is not None and "scoring" not in self.model_fields_set:
            self.scoring = "thread" if self.scoring_thread else "inline"
        return self


class WorkerSettings(BaseModel):
    """What the streaming worker serves and publishes."""

    model: str = Field(default="demo", description="registry model name to serve (its `active`)")
    model_poll_interval_s: float = Field(default=5.0, gt=0, le=3600)
    model_cache_dir: Path | None = Field(
        default=None,
        description="local copy of the last verified active version; unset = DEV__DATA_DIR/"
        "model-cache",
    )
    only_anomalous: bool = Field(default=False, description="publish anomalous windows only")
    include_samples: bool = Field(default=False, description="add the window's values to records")
    gap_factor: float = Field(
        default=5.0, ge=0, description="gap > factor x typical interval resets (0 = never)"
    )
    series_idle_timeout_s: float = Field(default=3600.0, gt=0)
    max_series: int = Field(default=100_000, ge=1)
    shadow_alias: str | None = Field(
        default=None,
        description="also score every window with the version behind this alias of the model"
        " (e.g. candidate) and publish those records to KAFKA__SHADOW_TOPIC; unset = off",
    )
    drift_window_s: float = Field(
        default=3600.0, gt=0, description="sliding time window of the live drift metrics"
    )


class RoutingSettings(BaseModel):
    """Many models in one worker, chosen per series by the routing table (`seq2gmm routes`)."""

    enabled: bool = Field(
        default=False,
        description="serve the routing table's models (false: WORKER__MODEL for every series)",
    )
    max_models: int = Field(default=8, ge=1, le=1024, description="models loaded at once")
    cold_start: Literal["wait", "dead_letter"] = Field(
        default="wait",
        description="records of a model with no active version yet: wait for it (bounded)"
        " or go to the dead-letter topic",
    )
    max_waiting_records: int = Field(default=100_000, ge=0, le=10_000_000)


class IncidentSettings(BaseModel):
    """Anomalous windows of one series merged into incidents on their own topic (README)."""

    enabled: bool = Field(default=True, description="publish incidents to `topic`")
    topic: str = "ts.incidents"
    min_windows: int = Field(default=1, ge=1, description="anomalous windows to open one")
    gap_tolerance: int = Field(
        default=1, ge=0, description="normal windows allowed between those before it opens"
    )
    resolve_after: int = Field(default=3, ge=1, description="consecutive normal windows")
    renotify_s: float = Field(
        default=300.0, ge=0, description="stream seconds between two records of one incident"
    )
    idle_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        description="stream seconds without an anomalous window that resolve it; also how far"
        " back (wall clock) a worker reads the topic to restore incidents on assignment",
    )


class RetrainSettings(BaseModel):
    """The gate of ``seq2gmm retrain`` (worker/stream/gate.py; docs/operations.md)."""

    min_windows: int = Field(default=20, ge=1, description="recent windows needed to judge")
    rate_tolerance: float = Field(
        default=0.5, ge=0, description="candidate rate may exceed the reference by this share"
    )
    rate_slack_windows: int = Field(
        default=2, ge=0, description="flagged windows allowed above the limit (small samples)"
    )
    min_incident_share: float = Field(
        default=0.8, ge=0, le=1, description="share of the active's incidents also opened"
    )
    stale_factor: float = Field(
        default=5.0, gt=1, description="active flags more than this times its expected rate"
    )
    stale_segments: int = Field(
        default=4, ge=1, description="... in every one of this many stretches of the holdout"
    )
    calibration_factor: float = Field(
        default=3.0,
        gt=1,
        description="candidate's threshold flags its stated share of its training windows"
        " within this factor either way",
    )


class LoggingSettings(BaseModel):
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto = console on a terminal, JSON otherwise."
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class MetricsSettings(BaseModel):
    host: str = "0.0.0.0"
    port: int = Field(default=9108, ge=0, le=65_535, description="0 disables the HTTP server.")


class DevSettings(BaseModel):
    """The embedded development services started by ``seq2gmm dev up``."""

    data_dir: Path = Path(".seq2gmm/dev")
    host: str = "127.0.0.1"
    kafka_port: int = Field(default=19092, ge=1, le=65_535)
    redis_port: int = Field(default=16379, ge=1, le=65_535)
    start_timeout_s: float = Field(default=30.0, gt=0)


class Settings(BaseSettings):
    """The whole configuration tree (environment variables override the defaults)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="ignore",
        case_sensitive=False,
    )

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    batching: BatchingSettings = BatchingSettings()
    worker: WorkerSettings = WorkerSettings()
    routing: RoutingSettings = RoutingSettings()
    incidents: IncidentSettings = IncidentSettings()
    retrain: RetrainSettings = RetrainSettings()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # CPU threads for torch (0 = torch's default, one per core). On small or shared CPUs, 1 is
    # several times faster for segmentation (measured: docs/benchmarks.md).
    torch_threads: int = Field(default=0, ge=0, le=512)
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    dev: DevSettings = DevSettings()


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable that sets the field at ``loc`` (a pydantic error location)."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ENV_PREFIX + ENV_DELIMITER.join(parts).upper()


def _shown_input(name: str, value: Any) -> str:
    """The offending value for the error message, unless it may carry a secret."""
    if isinstance(value, dict | list) or any(s in name for s in ("PASSWORD", "URL", "SECRET")):
        return ""
    return f" (got {value!r})"


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; invalid values raise ConfigError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = env_name(err["loc"]) if err["loc"] else ENV_PREFIX + "*"
            lines.append(f"  {name}: {err['msg']}{_shown_input(name, err.get('input'))}")
        raise ConfigError(
            "invalid settings; fix these environment variables:\n" + "\n".join(lines)
        ) from None
