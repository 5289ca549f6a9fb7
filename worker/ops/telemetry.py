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
        yield from _incident_metrics(core.incident_stats())


def _incident_metrics(stats: dict[str, int]) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """From the core's incident_stats() (empty while incidents are off)."""
    if not stats:
        return
    for name, doc in (("opened", "incidents opened"), ("resolved", "incidents resolved")):
        yield CounterMetricFamily(
            f"{PREFIX}_incidents_{name}", doc, value=stats[f"incidents_{name}"]
        )
    yield GaugeMetricFamily(
        f"{PREFIX}_incidents_open", "incidents open in this worker", value=stats["incidents_open"]
    )


class WorkerMetrics:
    def __init__(self, core: Callable[[], StreamCore | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_CoreCollector(core))
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

    def set_lag(self, lag: dict[int, int]) -> None:
        self.consumer_lag.clear()
        for partition, n in lag.items():
            self.consumer_lag.labels(partition=str(partition)).set(n)
        self.assigned_partitions.set(len(lag))
