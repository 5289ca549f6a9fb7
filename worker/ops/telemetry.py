"""Prometheus metrics of one worker process (prometheus_client, a private registry).

Counters are read from the streaming core at scrape time (one source of truth: the same
numbers end up in the ``worker_stats`` log line and the run summary); histograms and gauges
are observed by the Kafka loop; the registry's reachability and the model load failures are
read from the model watcher's status. Every name here is referenced by the alerting rules and
the dashboard of ``deploy/monitoring/`` (tests/test_monitoring.py checks them against a real
scrape): rename one only together with them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from worker.ops.drift import DriftMonitor
    from worker.registry.watcher import WatcherStatus
    from worker.stream.core_api import Core

PREFIX = "seq2gmm"

_COUNTERS = {
    "consumed": "records consumed from the raw topic",
    "samples": "samples accepted into series buffers",
    "windows": "complete windows built",
    "scored": "windows scored",
    "anomalous": "windows scored above the threshold",
    "batches": "microbatches scored",
}
#: exported at 0 from the start, so that rules and dashboards find every series before the
#: first event (the core counts other reasons too, should one appear)
DEAD_LETTER_REASONS = ("invalid_message", "wrong_width", "scoring_failed")
DROP_REASONS = (
    "duplicate",
    "out_of_order",
    "gap_reset",
    "evicted_idle",
    "evicted_series_cap",
    "partition_moved",
)


class _CoreCollector(Collector):
    """Counters and gauges straight from the StreamCore's bookkeeping."""

    def __init__(self, core: Callable[[], Core | None]) -> None:
        self._core = core

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        core = self._core()
        if core is None:
            return
        counters = dict(core.counters)
        for name, doc in _COUNTERS.items():
            yield CounterMetricFamily(f"{PREFIX}_{name}", doc, value=counters.get(name, 0))
        dead = CounterMetricFamily(
            f"{PREFIX}_dead_lettered", "records sent to the dead-letter topic", labels=["reason"]
        )
        for reason, n in sorted(
            {**dict.fromkeys(DEAD_LETTER_REASONS, 0), **core.dead_letters}.items()
        ):
            dead.add_metric([reason], n)
        yield dead
        dropped = CounterMetricFamily(
            f"{PREFIX}_dropped_samples", "samples dropped, by reason", labels=["reason"]
        )
        for reason, n in sorted(
            {**dict.fromkeys(DROP_REASONS, 0), **core.windower.dropped}.items()
        ):
            dropped.add_metric([reason], n)
        yield dropped
        yield GaugeMetricFamily(
            f"{PREFIX}_tracked_series", "series with state in this worker", value=len(core.windower)
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_pending_windows",
            "complete windows waiting to be scored",
            value=core.backlog(),
        )
        yield from _per_model(core)


def _per_model(core: Core) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """Windows scored and flagged per served model, and each model's expected anomaly rate
    (a routed worker serves several models)."""
    scored = CounterMetricFamily(
        f"{PREFIX}_model_scored", "windows scored, per served model", labels=["model"]
    )
    anomalous = CounterMetricFamily(
        f"{PREFIX}_model_anomalous",
        "windows above the threshold, per served model",
        labels=["model"],
    )
    rate = GaugeMetricFamily(
        f"{PREFIX}_model_expected_anomaly_rate",
        "share of normal windows the served model flags by design (its threshold's"
        " false-positive target), to compare with anomalous / scored",
        labels=["model", "version"],
    )
    for model, counters in core.served():
        scored.add_metric([model.name], counters.get("scored", 0))
        anomalous.add_metric([model.name], counters.get("anomalous", 0))
        expected = getattr(model, "expected_anomaly_rate", None)
        if expected is not None:
            rate.add_metric([model.name, str(model.version)], float(expected))
    yield scored
    yield anomalous
    yield rate


class _RegistryCollector(Collector):
    """The model watcher's view of the registry (its status: no I/O at scrape time)."""

    def __init__(self, status: Callable[[], WatcherStatus]) -> None:
        self._status = status

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        status = self._status()
        yield GaugeMetricFamily(
            f"{PREFIX}_registry_reachable",
            "1 while the model registry (Redis) answered the watcher's latest read, else 0",
            value=1 if status.reachable else 0,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_model_load_failures",
            "model versions (or cached copies) that failed verification or loading",
            value=status.load_failures,
        )


class _JudgementCollector(Collector):
    """Shadow agreement (worker.stream.shadow) and live drift (worker.ops.drift)."""

    def __init__(
        self, core: Callable[[], Core | None], drift: Callable[[], DriftMonitor | None]
    ) -> None:
        self._core, self._drift = core, drift

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        core = self._core()
        if core is not None:
            gate = getattr(core, "shadow_gate", None)  # a routed core has no shadow
            counts: Counter[str] = gate.counters if gate is not None else Counter()
            agree = CounterMetricFamily(
                f"{PREFIX}_shadow_windows",
                "windows scored by the active and the shadow model, by agreement of their flags",
                labels=["agreement"],
            )
            for label in ("both", "active_only", "shadow_only", "neither"):
                agree.add_metric([label], counts.get(label, 0))
            yield agree
            for what, doc in (
                ("failed", "windows the shadow model failed to score (never dead-lettered)"),
                ("skipped", "windows not shadow-scored: the shadow cuts series differently"),
            ):
                yield CounterMetricFamily(f"{PREFIX}_shadow_{what}_windows", doc, counts[what])
        monitor = self._drift()
        if monitor is None:
            return
        stat = GaugeMetricFamily(
            f"{PREFIX}_drift_statistic",
            "PSI of the live window percentiles over the training deciles (sliding window;"
            " >= 0.25: drift)",
            labels=["model"],
        )
        share = GaugeMetricFamily(
            f"{PREFIX}_window_anomaly_share",
            "share of the windows of the sliding window above the model's threshold",
            labels=["model"],
        )
        count = GaugeMetricFamily(
            f"{PREFIX}_drift_windows",
            "windows in the sliding window (the statistic gives no verdict below 200)",
            labels=["model"],
        )
        reports = monitor.reports()
        served = {m.name for m, _ in core.served()} if core is not None else set()
        for name in sorted(served | set(reports)):
            report = reports.get(name)
            if report is None:  # served, nothing scored yet: no statistic, 0 windows
                stat.add_metric([name], math.nan)
                share.add_metric([name], math.nan)
                count.add_metric([name], 0)
                continue
            stat.add_metric([name], report.statistic)
            share.add_metric([name], report.anomaly_share)
            count.add_metric([name], report.windows)
        yield from (stat, share, count)


class WorkerMetrics:
    def __init__(
        self,
        core: Callable[[], Core | None],
        registry_status: Callable[[], WatcherStatus] | None = None,
        drift: Callable[[], DriftMonitor | None] = lambda: None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_CoreCollector(core))
        self.registry.register(_JudgementCollector(core, drift))
        if registry_status is not None:
            self.registry.register(_RegistryCollector(registry_status))
        self.batch_size = Histogram(
            f"{PREFIX}_batch_windows",
            "windows per scored microbatch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            f"{PREFIX}_batch_seconds",
            "time to segment and score one microbatch",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.end_to_end_seconds = Histogram(
            f"{PREFIX}_end_to_end_seconds",
            "from polling the record that completed a window to its record being published",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            f"{PREFIX}_consumer_lag",
            "records between this worker's position and the partition end",
            ["partition"],
            registry=self.registry,
        )
        self.assigned_partitions = Gauge(
            f"{PREFIX}_assigned_partitions",
            "partitions assigned to this worker",
            registry=self.registry,
        )
        self.broker_reachable = Gauge(
            f"{PREFIX}_broker_reachable",
            "1 while the Kafka broker answers the worker's look at the partition ends, else 0",
            registry=self.registry,
        )
        self.broker_reachable.set(1)
        self.model = Info(f"{PREFIX}_model", "the model served", registry=self.registry)
        self.device = Info(f"{PREFIX}_device", "where scoring runs", registry=self.registry)
        self.shadow_model = Info(
            f"{PREFIX}_shadow_model", "the shadow alias's model version", registry=self.registry
        )

    def set_lag(self, lag: dict[int, int]) -> None:
        self.consumer_lag.clear()
        for partition, n in lag.items():
            self.consumer_lag.labels(partition=str(partition)).set(n)
        self.assigned_partitions.set(len(lag))
