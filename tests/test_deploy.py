"""deploy/ stays consistent with the settings: every variable it sets is a real setting."""

from pathlib import Path

import pytest

from worker.settings import load_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def env_lines(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_env_example_uses_only_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_lines(DEPLOY / "worker.env.example")
    assert env, "deploy/worker.env.example is empty"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SEQ2GMM_KAFKA__SASL_PASSWORD", "from-a-secret")
    settings = load_settings()
    dumped = settings.model_dump()
    for key, value in env.items():
        path = key.removeprefix("SEQ2GMM_").lower().split("__")
        node = dumped
        for part in path:
            assert isinstance(node, dict) and part in node, f"{key} is not a setting"
            node = node[part]
        assert str(node) == value or str(node).lower() == value.lower(), key
