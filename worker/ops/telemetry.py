"""Prometheus metrics of one worker process (prometheus_client, a private registry).

Counters are read from the streaming core at scrape time (one source of truth: the same
numbers end up in the ``worker_stats`` log line and the run summary); histograms and gauges
are observed by the Kafka loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from worker.ops.drift import DriftMonitor
    from worker.stream.core import StreamCore

PREFIX = "seq2gmm"

_COUNTERS = {
    "consumed": "records consumed from the raw topic",
    "samples": "samples accepted into series buffers",
    "windows": "complete windows built",
    "scored": "windows scored",
    "anomalous": "windows scored above the threshold",
    "batches": "microbatches scored",
}


class _CoreCollector(Collector):
    """Counters and gauges straight from the StreamCore's bookkeeping."""

    def __init__(self, core: Callable[[], StreamCore | None]) -> None:
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
        for reason, n in sorted(core.dead_letters.items()):
            dead.add_metric([reason], n)
        yield dead
        dropped = CounterMetricFamily(
            f"{PREFIX}_dropped_samples", "samples dropped, by reason", labels=["reason"]
        )
        for reason, n in sorted(core.windower.dropped.items()):
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


class _JudgementCollector(Collector):
    """Shadow agreement (worker.stream.shadow) and live drift (worker.ops.drift)."""

    def __init__(
        self, core: Callable[[], StreamCore | None], drift: Callable[[], DriftMonitor | None]
    ) -> None:
        self._core, self._drift = core, drift

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        core = self._core()
        if core is not None:
            counts = core.shadow_gate.counters
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
        for name, report in sorted(monitor.reports().items()):
            stat.add_metric([name], report.statistic)
            share.add_metric([name], report.anomaly_share)
            count.add_metric([name], report.windows)
        yield from (stat, share, count)


class WorkerMetrics:
    def __init__(
        self,
        core: Callable[[], StreamCore | None],
        drift: Callable[[], DriftMonitor | None] = lambda: None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_CoreCollector(core))
        self.registry.register(_JudgementCollector(core, drift))
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
