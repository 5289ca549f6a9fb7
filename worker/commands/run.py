"""``seq2gmm worker``: the streaming worker (ts.raw -> ts.anomalies)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import structlog

from worker.dev.demo import ensure_demo_model
from worker.dev.endpoints import resolve_endpoints
from worker.ops.http_server import EndpointServer, Health
from worker.ops.settings import Settings
from worker.ops.telemetry import WorkerMetrics
from worker.registry.cache import ModelCache
from worker.registry.loader import RegistryModels, pick_device
from worker.registry.records import validate_name
from worker.registry.scoring_process import ProcessScorer, remote_loader
from worker.registry.store import ModelRegistry
from worker.registry.watcher import WATCH_TIMEOUT_S, ActiveModelWatcher, watch_registry
from worker.stream.kafka_loop import RunLimits, StreamWorker, core_options
from worker.stream.topics import ensure_topics


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("worker", help="consume ts.raw, score windows, publish ts.anomalies")
    p.add_argument("--model", help="registry model to serve (default SEQ2GMM_WORKER__MODEL)")
    p.add_argument("--max-records", type=int, default=None, help="stop after N input records")
    p.add_argument("--idle-timeout", type=float, default=None, help="stop after N idle seconds")
    p.add_argument(
        "--model-wait",
        type=float,
        default=None,
        help="give up after N seconds without an active model (default: wait)",
    )
    p.add_argument(
        "--stop-at-end",
        action="store_true",
        help="stop once the assigned partitions are consumed to their end (replays)",
    )
    p.add_argument(
        "--train-demo-if-missing",
        action="store_true",
        help="no active version yet: train the synthetic demo model and promote it first",
    )
    p.set_defaults(handler=_run)


def _watcher(
    settings: Settings, redis_url: str, name: str, device: Any, scorer: ProcessScorer | None
) -> ActiveModelWatcher[Any]:
    """The active version of ``name``, followed by a background thread on its own short-timeout
    Redis connection, with the local model cache as a fallback while Redis is unreachable;
    scored by ``scorer``'s process when given."""
    w = settings.worker
    cache_dir = w.model_cache_dir or settings.dev.data_dir / "model-cache"
    return ActiveModelWatcher(
        watch_registry(redis_url, settings.redis.key_prefix),
        name,
        loader=RegistryModels.loader(device) if scorer is None else remote_loader(scorer),
        poll_interval_s=w.model_poll_interval_s,
        cache=ModelCache(cache_dir, settings.redis.key_prefix),
    )


def _run(args: argparse.Namespace, settings: Settings) -> int:
    endpoints = resolve_endpoints(settings)
    name = validate_name(args.model or settings.worker.model)
    device = pick_device(settings.device)
    ensure_topics(endpoints.kafka_bootstrap, settings.kafka)
    w = settings.worker
    options = core_options(
        settings,
        only_anomalous=w.only_anomalous,
        include_samples=w.include_samples,
        gap_factor=w.gap_factor,
        idle_timeout_s=w.series_idle_timeout_s,
        max_series=w.max_series,
    )
    structlog.contextvars.bind_contextvars(model=name, device=str(device))
    scorer = None
    if settings.batching.scoring == "process":  # started now: the loop never waits for it
        scorer = ProcessScorer(device.type, settings.torch_threads).start()
    with ModelRegistry.from_url(endpoints.redis_url, settings.redis.key_prefix) as registry:
        if args.train_demo_if_missing:
            ensure_demo_model(registry, name)
        # a first answer (or the cached model) before the loop asks; never blocks after this
        watcher = _watcher(settings, endpoints.redis_url, name, device, scorer)
        watcher.start(wait_s=3 * WATCH_TIMEOUT_S)
        health = Health(
            stuck_after_s=settings.kafka.max_poll_interval_ms / 1000,
            registry_ok=lambda: watcher.status().reachable,
        )
        worker = StreamWorker(
            settings,
            endpoints.kafka_bootstrap,
            RegistryModels(watcher, device),
            options,
            RunLimits(args.max_records, args.idle_timeout, args.model_wait, args.stop_at_end),
            health=health,
        )
        server = None
        if settings.metrics.port:
            metrics = WorkerMetrics(lambda: worker.core)
            metrics.device.info({"device": str(device)})
            worker.metrics = metrics
            server = EndpointServer(
                settings.metrics.host, settings.metrics.port, metrics.registry, health
            ).start()
            structlog.get_logger().info(
                "http_endpoints", port=server.port, paths=["/metrics", "/healthz", "/readyz"]
            )
        try:
            worker.install_signal_handlers()
            summary = worker.run()
        finally:
            watcher.close()
            if scorer is not None:
                scorer.close()
            if server is not None:
                server.stop()
    print(json.dumps({"model": name, **summary}))
    return 0
