import pytest

from worker.errors import ConfigError
from worker.ops.settings import Settings, env_name, load_settings


def test_defaults_use_the_documented_topics() -> None:
    s = Settings()
    assert (s.kafka.raw_topic, s.kafka.anomalies_topic) == ("ts.raw", "ts.anomalies")
    assert s.kafka.bootstrap_servers is None and s.redis.url is None  # -> embedded services
    assert s.device == "auto"


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("SEQ2GMM_BATCHING__MAX_WINDOWS", "512")
    monkeypatch.setenv("SEQ2GMM_REDIS__URL", "rediss://:secret@redis:6380/1")
    monkeypatch.setenv("SEQ2GMM_DEVICE", "cuda")
    s = load_settings()
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert s.batching.max_windows == 512
    assert s.redis.url is not None and s.redis.url.get_secret_value().startswith("rediss://")
    assert "secret" not in repr(s)  # secrets never show in logs or reprs
    assert s.device == "cuda"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SEQ2GMM_KAFKA__MAX_POLL_INTERVAL_MS", "soon"),
        ("SEQ2GMM_DEVICE", "gpu"),
        ("SEQ2GMM_BATCHING__MAX_WINDOWS", "0"),
        ("SEQ2GMM_LOGGING__FORMAT", "xml"),
        ("SEQ2GMM_METRICS__PORT", "70000"),
    ],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert var in str(exc.value)


def test_sasl_requires_credentials_and_never_echoes_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEQ2GMM_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SEQ2GMM_KAFKA__SASL_PASSWORD", "hunter2")
    with pytest.raises(ConfigError) as exc:
        load_settings()
    msg = str(exc.value)
    assert "SEQ2GMM_KAFKA__SASL_MECHANISM" in msg and "SEQ2GMM_KAFKA__SASL_USERNAME" in msg
    assert "hunter2" not in msg


def test_sasl_options_reach_the_kafka_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQ2GMM_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SEQ2GMM_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SEQ2GMM_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("SEQ2GMM_KAFKA__SASL_PASSWORD", "hunter2")
    opts = load_settings().kafka.client_options()
    assert opts["sasl_plain_password"] == "hunter2" and opts["sasl_mechanism"] == "SCRAM-SHA-512"


def test_env_name_maps_error_locations() -> None:
    assert env_name(("kafka", "group_id")) == "SEQ2GMM_KAFKA__GROUP_ID"
