"""Monitoring as code (deploy/monitoring/): the rules and the dashboard against the metrics the
worker really exports, checked by Debian's ``promtool`` and, in the integration test, by a real
``prometheus`` scraping a real worker on the embedded services.

Without the binaries (``apt-get install prometheus``; CI installs it in .ci/run) the tests that
need them skip and say so.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from kafka import KafkaProducer
from prometheus_client import generate_latest
from safetensors.torch import save as save_tensors
from worker_env import worker_env

from model.thresholds import EnergyQuantiles, Threshold, expected_alarm_rate
from worker.dev.replay import rows_as_windows
from worker.dev.services import Endpoints, free_port
from worker.ops.drift import DriftMonitor
from worker.ops.settings import KafkaSettings
from worker.ops.telemetry import WorkerMetrics
from worker.registry.cache import ModelCache
from worker.registry.connection import connect
from worker.registry.records import ModelVersion, sha256_hex
from worker.registry.store import ModelRegistry
from worker.registry.watcher import ActiveModelWatcher, WatcherStatus, watch_registry
from worker.stream.core import StreamCore
from worker.stream.testing import FakeModel
from worker.stream.topics import ensure_topics

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "deploy" / "monitoring"
RULES = MONITORING / "rules.yaml"
RULE_TESTS = MONITORING / "rules.test.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
PROMETHEUS_YML = MONITORING / "prometheus.yml"
RUNBOOK = REPO / "docs" / "runbook.md"
JOB = "seq2gmm-worker"  # the scrape job the rules and the dashboard expect

#: a worker metric named in an expression (not the inside of a recording rule's name)
METRIC_RE = re.compile(r"(?<![\w:])seq2gmm_\w+(?![\w:])")
#: Grafana's variables, replaced by what they stand for when the dashboard is shown
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": JOB, "${datasource}": "prometheus"}


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(
            f"{binary} not found: apt-get install prometheus (Debian's package; .ci/run does)"
        )
    return path


def run_tool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, check=False
    )


# ------------------------------------------------------------------------------- the inputs


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panel_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables replaced) for every target."""
    out = []
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            out.append((panel["title"], expr))
    return out


def referenced_metrics() -> set[str]:
    """Every worker metric the rules and the dashboard name, plus Prometheus's ``up``."""
    exprs = [r["expr"] for r in rules()] + [e for _, e in panel_exprs()]
    return {m for e in exprs for m in METRIC_RE.findall(e)} | {"up"}


def exported_names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1].isalpha()}


def fresh_worker_metrics() -> WorkerMetrics:
    """The metrics of a worker that just loaded its model and got its first partitions (before
    any record): what a scrape finds from the start."""
    model = FakeModel(name="ecg", version=3)
    model.expected_anomaly_rate = 0.01  # type: ignore[attr-defined]  # DetectorModel's attribute
    core = StreamCore(model)
    status = WatcherStatus("ecg:3", "registry", True, 0.1, None)
    drift = DriftMonitor()
    metrics = WorkerMetrics(lambda: core, lambda: status, drift=lambda: drift)
    metrics.model.info({"name": "ecg", "version": "3"})
    metrics.set_lag({0: 0})
    return metrics


# ---------------------------------------------------------------------- new worker metrics


def test_the_expected_anomaly_rate_is_the_thresholds_false_positive_target() -> None:
    q = EnergyQuantiles.from_scores(np.arange(1001.0))
    assert expected_alarm_rate(Threshold(9.0, "fpr", 0.01, 100), None) == 0.01
    assert expected_alarm_rate(Threshold(9.0, "quantile", 0.95, 100), q) == pytest.approx(0.05)
    # F1-chosen: the share of the training scores above it (0.1 % of 0..1000 lie above 999)
    assert expected_alarm_rate(Threshold(999.0, "f1", 0.8, 100), q) == pytest.approx(0.001)
    assert expected_alarm_rate(Threshold(999.0, "f1", 0.8, 100), None) is None


def test_the_metrics_rules_need_are_exported_before_the_first_record() -> None:
    text = generate_latest(fresh_worker_metrics().registry).decode()
    assert 'seq2gmm_model_expected_anomaly_rate{model="ecg",version="3"} 0.01' in text
    assert "seq2gmm_registry_reachable 1.0" in text
    assert "seq2gmm_model_load_failures_total 0.0" in text
    assert 'seq2gmm_dead_lettered_total{reason="wrong_width"} 0.0' in text
    assert 'seq2gmm_dropped_samples_total{reason="gap_reset"} 0.0' in text
    assert "seq2gmm_end_to_end_seconds_bucket" in text  # histograms: every bucket at 0


def test_rules_and_dashboard_name_only_metrics_the_worker_exports() -> None:
    exported = exported_names(generate_latest(fresh_worker_metrics().registry).decode())
    missing = referenced_metrics() - exported - {"up"}
    assert not missing, f"named in deploy/monitoring but not exported: {sorted(missing)}"
    assert len(referenced_metrics()) > 15  # the scan does find the names


def test_a_refused_version_counts_as_a_load_failure(tmp_path: Path) -> None:
    """A cached copy that fails verification at start (Redis unreachable) is one failure."""
    weights = save_tensors({"w": torch.zeros(2)})
    metadata = {"window_length": 8, "weights_sha256": sha256_hex(weights)}
    record = ModelVersion("ecg", 1, metadata, weights, sha256_hex(weights), 1.0)
    cache = ModelCache(tmp_path, "p")
    cache.save(record)

    def refuse(rec: ModelVersion) -> None:
        raise ValueError("no such detector kind")

    dead = watch_registry(f"redis://127.0.0.1:{free_port()}/0", "p", timeout_s=0.5)
    watcher = ActiveModelWatcher(dead, "ecg", loader=refuse, cache=cache)
    assert watcher.status().load_failures == 0
    watcher.check()
    watcher.check(force=True)  # the cache is tried once per watcher: still one failure
    assert watcher.status().load_failures == 1 and watcher.current() is None
    text = generate_latest(WorkerMetrics(lambda: None, watcher.status).registry).decode()
    assert "seq2gmm_model_load_failures_total 1.0" in text
    assert "seq2gmm_registry_reachable 0.0" in text
    dead.close()


# --------------------------------------------------------------------- rules and promtool


def test_promtool_checks_the_rules_and_the_example_config() -> None:
    promtool = need("promtool")
    checked = run_tool(promtool, "check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = run_tool(promtool, "check", "config", PROMETHEUS_YML)
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    promtool = need("promtool")
    result = run_tool(promtool, "test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    evaluations = [e for t in tested for e in t.get("alert_rule_test", [])]
    for rule in alerts():
        mine = [e for e in evaluations if e["alertname"] == rule["alert"]]
        assert any(e["exp_alerts"] for e in mine), f"{rule['alert']} never shown firing"
        assert any(not e["exp_alerts"] for e in mine), f"{rule['alert']} never shown quiet"


def test_promtool_unit_tests_fail_when_a_threshold_moves(tmp_path: Path) -> None:
    """The unit tests can fail: each alert's threshold moved just past its test input."""
    promtool = need("promtool")
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    moves = {
        "> 0.01\n": "> 0.001\n",  # dead letters
        "> 5 * model": "> 1 * model",  # anomaly rate vs expected
        "p99_5m > 10": "p99_5m > 1",
        "[10m]) > 0\n": "[10m]) >= 0\n",  # lag growing
    }
    for old, new in moves.items():
        text = RULES.read_text()
        assert old in text
        (tmp_path / RULES.name).write_text(text.replace(old, new))
        result = run_tool(promtool, "test", "rules", tmp_path / RULE_TESTS.name)
        assert result.returncode != 0, f"moving {old!r} to {new!r} went unnoticed"


def test_every_alert_has_for_severity_and_a_runbook_section() -> None:
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), re.M)
    anchors = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
    assert len(alerts()) >= 8
    for rule in alerts():
        name = rule["alert"]
        assert rule.get("for"), f"{name} has no for:"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        path, _, anchor = notes["runbook_url"].partition("#")
        assert path == "docs/runbook.md" and anchor == name.lower(), name
        assert anchor in anchors, f"docs/runbook.md has no section for {name}"


# ------------------------------------------------------------------------------- dashboard


def test_the_dashboard_is_valid_and_every_panel_expression_parses(tmp_path: Path) -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    for panel in board["panels"]:
        assert panel["targets"], f"panel {panel['title']} has no query"
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("throughput", "lag", "end-to-end", "anomaly rate", "dead letters", "model"):
        assert topic in titles
    assert "batch size" in titles
    # promtool has no expression check: one recording rule per panel expression does it
    exprs = panel_exprs()
    as_rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"panel:expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)
                ],
            }
        ]
    }
    (tmp_path / "panels.yaml").write_text(yaml.safe_dump(as_rules))
    promtool = need("promtool")
    result = run_tool(promtool, "check", "rules", tmp_path / "panels.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


def test_a_broken_panel_expression_is_caught(tmp_path: Path) -> None:
    promtool = need("promtool")
    broken = {"groups": [{"name": "d", "rules": [{"record": "x:y", "expr": "sum(rate(x[1m])"}]}]}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    assert run_tool(promtool, "check", "rules", tmp_path / "broken.yaml").returncode != 0


# ------------------------------------------------------------- a real Prometheus, a real worker


def http_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read().decode())
    except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
        return None


def wait_for(
    check: Callable[[], Any], timeout: float, what: str, why: Callable[[], Any] = lambda: ""
) -> Any:
    """Poll ``check()`` until truthy (an event, bounded in time); ``why()`` explains a miss."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s {why()}")


class Prometheus:
    """A real ``prometheus`` on a loopback port, scraping one target every second."""

    def __init__(self, binary: str, tmp: Path, target: str) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (tmp / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        body = http_json(f"http://127.0.0.1:{self.port}/api/v1/{path}{query}")
        return body["data"] if body and body.get("status") == "success" else None

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        return list(data["result"]) if data else []

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def prometheus_binary() -> str:
    return need("prometheus")


@pytest.fixture
def worker(
    services: Endpoints, unique: str, twolead: tuple[Any, Path], tmp_path: Path
) -> Iterator[tuple[int, str]]:
    """A ``seq2gmm worker`` serving a promoted model, ready (model loaded, partitions assigned);
    yields its metrics port and raw topic."""
    _, model_dir = twolead
    raw = f"raw-{unique}"
    ensure_topics(services.kafka_bootstrap, KafkaSettings(num_partitions=2), [raw])
    with ModelRegistry(connect(services.redis_url), unique) as registry:
        registry.publish_dir(model_dir, "ecg", promote=True)
    port = free_port()
    env = worker_env(
        services,
        unique,
        tmp_path / "cache",
        METRICS__HOST="127.0.0.1",
        METRICS__PORT=str(port),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "worker", "--model", "ecg"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = f"http://127.0.0.1:{port}/readyz"
        wait_for(lambda: (http_json(ready) or {}).get("ok"), 60, "the worker is ready")
        yield port, raw
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]


def produce(bootstrap: str, raw: str, rows: Any) -> int:
    """``rows`` as one-window messages on 4 series, and one undecodable record."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for sid, message in rows_as_windows(rows, n_series=4, prefix="ecg", start=0.0):
        producer.send(raw, key=sid.encode(), value=json.dumps(message).encode())
    producer.send(raw, key=b"x", value=b"not json")
    producer.flush()
    producer.close()
    return len(rows) + 1


@pytest.mark.integration
def test_prometheus_scrapes_a_real_worker_and_every_rule_evaluates(
    prometheus_binary: str,  # first: without it the test skips before starting a worker
    services: Endpoints,
    twolead: tuple[Any, Path],
    worker: tuple[int, str],
    tmp_path: Path,
) -> None:
    port, raw = worker
    prom = Prometheus(prometheus_binary, tmp_path, f"127.0.0.1:{port}")
    try:
        # the counters are scraped at 0 first, so that rate() sees the records arrive
        wait_for(lambda: prom.query(f'seq2gmm_consumed_total{{job="{JOB}"}}'), 30, "a scrape")
        consumed = produce(services.kafka_bootstrap, raw, twolead[0].test[:40])
        wait_for(
            lambda: (
                prom.query(f"seq2gmm_consumed_total >= {consumed}")
                and prom.query("seq2gmm_end_to_end_seconds_count >= 40")
            ),
            60,
            "the worker's counters after the records, in Prometheus",
        )
        evaluated = wait_for(lambda: evaluated_rules(prom), 30, "every rule evaluated")
        assert {r["name"] for r in evaluated} == {r.get("record") or r["alert"] for r in rules()}
        unhealthy = [
            (r["name"], r["health"], r.get("lastError"))
            for r in evaluated
            if r["health"] != "ok" or r.get("lastError")
        ]
        assert not unhealthy
        recorded = [r["record"] for r in rules() if "record" in r]

        def empty() -> list[str]:
            return [name for name in recorded if not prom.query(name)]

        wait_for(
            lambda: not empty(),
            30,
            "every recording rule has a series (the joins match the real labels)",
            lambda: f"(none yet: {empty()})",
        )

        # every dashboard query runs (no matching error) and shows something on this worker
        blank = [(title, e) for title, e in panel_exprs() if not prom.query(e)]
        assert not blank, f"panels with no data or a failing query: {blank}"
        scraped = set(prom.api("label/__name__/values") or [])
        missing = referenced_metrics() - scraped
        assert not missing, f"named by the rules or the dashboard, never scraped: {missing}"

        # one bad record of 41 is over the 1 % of Seq2GMMDeadLettersRising: pending (for: 10m;
        # no alert can fire within this test, every for: is at least a minute)
        def states() -> dict[str, str]:
            return {a["labels"]["alertname"]: a["state"] for a in prom.api("alerts")["alerts"]}

        wait_for(
            lambda: states().get("Seq2GMMDeadLettersRising") == "pending",
            30,
            "the dead-letter alert pending",
            lambda: states(),
        )
        ratio = prom.query("model:seq2gmm_expected_anomaly_rate:max")
        assert ratio[0]["metric"]["model"] == "ecg" and float(ratio[0]["value"][1]) == 0.01
    finally:
        prom.stop()


def evaluated_rules(prom: Prometheus) -> list[dict[str, Any]] | None:
    """Every rule of every group, once each has been evaluated at least once."""
    data = prom.api("rules")
    if not data:
        return None
    found = [r for g in data["groups"] for r in g["rules"]]
    if not found or any(r["health"] == "unknown" for r in found):
        return None
    return found
