"""Drift: the PSI of live window percentiles against the training deciles, its live monitor, and
``seq2gmm models drift`` on a topic."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest

from model.detectors.nearest.detector import NearestCycleDetector
from model.evaluation.drift import (
    ALERT_LEVEL,
    MIN_WINDOWS,
    drift_report,
    percentile_psi,
    verdict,
)
from model.evaluation.synthetic import SyntheticConfig, generate
from worker.dev.services import Endpoints
from worker.ops.drift import DriftMonitor

# ----------------------------------------------------------------------------- the statistic


def test_a_stable_stream_stays_far_below_the_alert_level_at_the_minimum_window_count() -> None:
    """Sampling noise of PSI at MIN_WINDOWS windows drawn from the training distribution."""
    rng = np.random.default_rng(0)
    psi = np.array([percentile_psi(rng.uniform(0, 100, MIN_WINDOWS)) for _ in range(4000)])
    assert abs(psi.mean() - 9 / MIN_WINDOWS) < 0.01  # n * PSI ~ chi-square(9)
    assert np.quantile(psi, 0.999) < 0.6 * ALERT_LEVEL


def test_psi_reads_shifts_and_ignores_unknown_percentiles() -> None:
    grid = (np.arange(1000) + 0.5) / 10.0  # 100 windows in each decile
    assert percentile_psi(grid) == pytest.approx(0.0, abs=1e-12)
    assert percentile_psi(np.full(300, 95.0)) > 2.0  # all in the top decile
    assert percentile_psi(np.r_[grid, np.full(50, np.nan)]) == percentile_psi(grid)
    assert np.isnan(percentile_psi(np.array([np.nan])))
    assert percentile_psi(np.array([100.0, 0.0])) == percentile_psi(np.array([99.9, 0.1]))


def test_the_verdict_needs_enough_windows() -> None:
    assert verdict(3.0, MIN_WINDOWS - 1) == "insufficient"
    assert verdict(0.05, MIN_WINDOWS) == "stable"
    assert verdict(0.15, MIN_WINDOWS) == "watch"
    assert verdict(ALERT_LEVEL, MIN_WINDOWS) == "drift"
    report = drift_report(np.full(250, 95.0), np.arange(250) < 25)
    assert report.verdict == "drift" and report.anomaly_share == pytest.approx(0.1)


# ----------------------------------------------------------------------------- the monitor


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_monitor_keeps_a_sliding_time_window_per_model_and_version() -> None:
    clock = Clock()
    monitor = DriftMonitor(window_s=10.0, max_windows=100, min_windows=1, clock=clock)
    monitor.observe("a", 1, [95.0] * 5, [True] * 5)
    clock.now = 6.0
    monitor.observe("a", 1, [5.0] * 5, [False] * 5)
    monitor.observe("b", 3, [50.0] * 2, [False, True])
    assert monitor.reports()["a"].windows == 10
    assert monitor.reports()["a"].anomaly_share == 0.5
    clock.now = 12.0  # the first five left the window
    assert monitor.reports()["a"].windows == 5 and monitor.reports()["a"].anomaly_share == 0.0
    monitor.observe("a", 2, [50.0], [False])  # a new version: a new reference, a new window
    assert monitor.reports()["a"].windows == 1
    assert monitor.reports()["b"].anomaly_share == 0.5
    monitor.observe("b", 3, [50.0] * 200, [False] * 200)
    assert monitor.reports()["b"].windows == 100  # bounded


def _cycles(cfg: SyntheticConfig) -> list[np.ndarray]:
    s = generate(cfg)[0]
    bounds = [*s.cycle_starts.tolist(), len(s.values)]
    return [s.values[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.fixture(scope="module")
def percentiles() -> tuple[np.ndarray, np.ndarray]:
    """A kNN model trained on 300 normal synthetic cycles, then the percentiles of the next 600
    normal cycles of the same series, and of 400 cycles of the same series whose sharp peak
    moved and widened (the ``shape`` change of the synthetic generator, in every cycle)."""
    normal = _cycles(SyntheticConfig(n_series=1, n_cycles=900, anomaly_rate=0.0, seed=3))
    shape = SyntheticConfig(n_series=1, n_cycles=900, anomaly_rate=1.0, kinds=("shape",), seed=3)
    changed = _cycles(shape)[500:900]  # same series parameters (drawn first from the seed)
    detector = NearestCycleDetector().fit(normal[:300], seed=0)
    live = [r.percentile for r in detector.score_detailed(normal[300:900])]
    moved = [r.percentile for r in detector.score_detailed(changed)]
    return np.array(live, dtype=np.float64), np.array(moved, dtype=np.float64)


def _feed(monitor: DriftMonitor, clock: Clock, pct: np.ndarray, batch: int = 8) -> list[str]:
    """Feed one window a second in batches; the verdict after each window of each batch."""
    verdicts = []
    for i in range(0, len(pct), batch):
        for p in pct[i : i + batch]:
            clock.now += 1.0
            monitor.observe("m", 1, [p], [False])
        verdicts += [monitor.reports()["m"].verdict] * len(pct[i : i + batch])
    return verdicts


def test_a_stable_stream_never_raises_the_alert(percentiles: tuple[np.ndarray, np.ndarray]) -> None:
    live, _ = percentiles
    clock = Clock()
    monitor = DriftMonitor(window_s=300.0, clock=clock)
    verdicts = _feed(monitor, clock, live)
    assert "drift" not in verdicts and verdicts[-1] in ("stable", "watch")
    assert verdicts[MIN_WINDOWS - 9] == "insufficient"


def test_cycles_changing_shape_halfway_raise_the_alert_within_80_windows(
    percentiles: tuple[np.ndarray, np.ndarray],
) -> None:
    live, moved = percentiles
    clock = Clock()
    monitor = DriftMonitor(window_s=300.0, clock=clock)
    verdicts = _feed(monitor, clock, np.r_[live[:400], moved])
    assert "drift" not in verdicts[:400]
    first = verdicts.index("drift", 400) - 400
    assert first <= 80, f"drift seen only {first} windows after the change"
    assert set(verdicts[400 + first + 8 :]) == {"drift"}


# ----------------------------------------------------------------------------- the command


@pytest.mark.integration
def test_models_drift_reads_the_anomalies_topic(
    services: Endpoints,
    unique: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kafka import KafkaProducer

    from worker.cli import main
    from worker.ops.settings import KafkaSettings
    from worker.stream.messages import AnomalyRecord, ModelRef, WindowRef
    from worker.stream.topics import ensure_topics

    topic = f"anom-{unique}"
    ensure_topics(services.kafka_bootstrap, KafkaSettings(num_partitions=2), [topic])
    rng = np.random.default_rng(0)
    producer = KafkaProducer(bootstrap_servers=services.kafka_bootstrap)

    def send(version: int, pct: np.ndarray, name: str = "m") -> None:
        for i, p in enumerate(pct):
            rec = AnomalyRecord(
                id=f"{version}-{i}",
                series_id=f"s-{i % 3}",
                model=ModelRef(name=name, version=version),
                window=WindowRef(start=float(i), end=float(i) + 1.0, n_samples=2),
                energy=float(p),
                threshold=99.0,
                anomalous=bool(p > 99.0),
                percentile=float(p),
                segments=[],
                scored_at=time.time(),
            )
            producer.send(topic, key=rec.series_id.encode(), value=rec.to_bytes())

    send(1, rng.uniform(0, 100, 300))  # stable
    drifted = np.r_[rng.uniform(0, 100, 200), rng.uniform(95, 100, 100)]
    send(2, drifted)
    send(1, rng.uniform(0, 100, 300)[:50], name="other")  # another model: ignored
    producer.send(topic, value=b"not json")
    producer.flush()
    producer.close()
    monkeypatch.setenv("SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS", services.kafka_bootstrap)
    monkeypatch.setenv("SEQ2GMM_KAFKA__ANOMALIES_TOPIC", topic)
    assert main(["models", "drift", "m", "--since", "1h", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    v1, v2 = doc["versions"]["1"], doc["versions"]["2"]
    assert (v1["windows"], v1["verdict"]) == (300, "stable")
    assert (v2["windows"], v2["verdict"]) == (300, "drift") and v2["statistic"] > ALERT_LEVEL
    assert v2["anomaly_share"] == pytest.approx(np.mean(drifted > 99.0))
    assert v2["decile_shares"][-1] == pytest.approx(np.mean(drifted >= 90.0), abs=1e-4)
    assert (doc["latest_version"], doc["verdict"]) == (2, "drift")
    assert doc["unreadable_records"] == 1 and doc["alert_level"] == ALERT_LEVEL
    assert main(["models", "drift", "m", "--since", "1h"]) == 0
    text = capsys.readouterr().out
    assert "v2: 300 windows" in text and text.rstrip().endswith("when to retrain)")
