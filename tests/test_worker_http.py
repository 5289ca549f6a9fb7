"""/metrics, /healthz and /readyz of a real worker process on the embedded services."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from worker_env import worker_env

from worker.dev.replay import rows_as_windows
from worker.dev.services import Endpoints, free_port
from worker.ops.settings import KafkaSettings
from worker.registry.connection import connect
from worker.registry.store import ModelRegistry
from worker.stream.topics import ensure_topics

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def wait_for(check: Any, timeout: float = 60.0) -> Any:
    """Poll ``check()`` until it returns something truthy (an event, bounded in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout} s")


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else -1.0


def test_probes_and_metrics_follow_the_worker(
    services: Endpoints, unique: str, twolead: tuple[Any, Path], tmp_path: Path
) -> None:
    split, model_dir = twolead
    raw, out = f"raw-{unique}", f"anom-{unique}"
    ensure_topics(services.kafka_bootstrap, KafkaSettings(num_partitions=2), [raw, out])
    port = free_port()
    env = worker_env(
        services,
        unique,
        tmp_path / "cache",
        WORKER__MODEL_POLL_INTERVAL_S="0.5",
        METRICS__HOST="127.0.0.1",
        METRICS__PORT=str(port),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "worker", "--model", "ecg"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # alive, but not ready: no model is active yet
        assert wait_for(lambda: get(port, "/healthz")[0] == 200)
        status, body = get(port, "/readyz")
        assert status == 503 and json.loads(body)["model"] is None

        with ModelRegistry(connect(services.redis_url), unique) as registry:
            registry.publish_dir(model_dir, "ecg", promote=True)
        ready = wait_for(lambda: get(port, "/readyz")[0] == 200 and get(port, "/readyz"))
        detail = json.loads(ready[1])
        assert detail["model"] == "ecg:1" and detail["assigned_partitions"] == 2
        assert detail["registry_reachable"] and detail["status"] == "ok"
        manifest = tmp_path / "cache" / unique / "ecg" / "manifest.json"
        assert wait_for(manifest.is_file)  # the local copy a restart without Redis would serve

        _, before = get(port, "/metrics")
        assert metric(before, "seq2gmm_scored_total") == 0
        assert 'seq2gmm_model_info{name="ecg",version="1"} 1.0' in before
        producer = KafkaProducer(bootstrap_servers=services.kafka_bootstrap)
        rows = split.test[:40]
        for sid, m in rows_as_windows(rows, n_series=4, prefix="ecg", start=0.0):
            producer.send(raw, key=sid.encode(), value=json.dumps(m).encode())
        producer.send(raw, key=b"x", value=b"not json")
        producer.flush()
        producer.close()

        def scored() -> str | None:
            text = get(port, "/metrics")[1]
            return text if metric(text, "seq2gmm_scored_total") >= len(rows) else None

        after = wait_for(scored)
        assert metric(after, "seq2gmm_consumed_total") == len(rows) + 1
        assert metric(after, "seq2gmm_windows_total") == len(rows)
        assert 'seq2gmm_dead_lettered_total{reason="invalid_message"} 1.0' in after
        # observed by the loop after the batch's records were handed to the producer: a scrape
        # can fall in between (counters come from the core, histograms from the loop)
        assert wait_for(
            lambda: metric(get(port, "/metrics")[1], "seq2gmm_batch_seconds_count") >= 1
        )
        # published (flushed) windows feed the end-to-end latency histogram
        assert wait_for(
            lambda: metric(get(port, "/metrics")[1], "seq2gmm_end_to_end_seconds_count") == 40
        )
        assert get(port, "/nope")[0] == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        out_text, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out_text.strip().splitlines()[-1])["scored"] == 40
    restart_without_redis(env, services, raw, split.test[40:48])


def restart_without_redis(env: dict[str, str], services: Endpoints, raw: str, rows: Any) -> None:
    """The next worker of the group starts while Redis is unreachable: it serves the version
    the first one cached, ready but degraded, and scores what arrives."""
    port = free_port()
    env = {
        **env,
        "SEQ2GMM_REDIS__URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        "SEQ2GMM_METRICS__PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "worker", "--model", "ecg"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = wait_for(lambda: get(port, "/readyz")[0] == 200 and get(port, "/readyz"))
        detail = json.loads(ready[1])
        assert detail["status"] == "degraded: registry unreachable, serving ecg:1", detail
        assert detail["registry_reachable"] is False and get(port, "/healthz")[0] == 200
        producer = KafkaProducer(bootstrap_servers=services.kafka_bootstrap)
        for sid, m in rows_as_windows(rows, n_series=4, prefix="ecg", start=1000.0):
            producer.send(raw, key=sid.encode(), value=json.dumps(m).encode())
        producer.flush()
        producer.close()
        assert wait_for(
            lambda: metric(get(port, "/metrics")[1], "seq2gmm_scored_total") == len(rows)
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        out_text, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "serving_cached_model" in err
    assert json.loads(out_text.strip().splitlines()[-1])["scored"] == len(rows)
