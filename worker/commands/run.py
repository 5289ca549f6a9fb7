"""``seq2gmm worker``: the streaming worker (ts.raw -> ts.anomalies)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from worker.dev.demo import ensure_demo_model
from worker.dev.endpoints import resolve_endpoints
from worker.errors import ConfigError
from worker.ops.http_server import EndpointServer, Health
from worker.ops.settings import Settings
from worker.ops.telemetry import WorkerMetrics
from worker.registry.alias import AliasModels, alias_watcher
from worker.registry.cache import ModelCache
from worker.registry.loader import RegistryModels, pick_device
from worker.registry.records import validate_alias, validate_name
from worker.registry.routed_models import RoutedModels
from worker.registry.routes import RouteStore
from worker.registry.scoring_process import ProcessScorer, remote_loader
from worker.registry.store import ModelRegistry
from worker.registry.watcher import (
    WATCH_TIMEOUT_S,
    ActiveModelWatcher,
    WatcherStatus,
    watch_registry,
)
from worker.stream.core import CoreOptions
from worker.stream.core_api import Core
from worker.stream.core_settings import (
    core_options,
    incident_options,
    scoring_mode,
    usable_cpus,
)
from worker.stream.kafka_loop import RunLimits, StreamWorker
from worker.stream.routed import RoutingOptions
from worker.stream.topics import ensure_topics, project_topics, require_partitions


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
    load = RegistryModels.loader(device, warm=True) if scorer is None else remote_loader(scorer)
    return ActiveModelWatcher(
        watch_registry(redis_url, settings.redis.key_prefix),
        name,
        loader=load,
        poll_interval_s=w.model_poll_interval_s,
        cache=ModelCache(cache_dir, settings.redis.key_prefix),
    )


@dataclass
class _Source:
    models: Any  # the loop's ModelSource
    status: Callable[[], WatcherStatus]  # the registry as last seen (for /readyz, /metrics)
    close: Callable[[], None]
    core_factory: Callable[[CoreOptions], Core] | None = None


def _model_source(
    settings: Settings, redis_url: str, name: str, device: Any, scorer: ProcessScorer | None
) -> _Source:
    """Where the worker's models come from: the active version of ``name``, or with
    ``SEQ2GMM_ROUTING__ENABLED`` the routing table's models, each followed in the background.
    A first answer (or the cached model) is awaited here; nothing blocks the loop after this."""
    if not settings.routing.enabled:
        watcher = _watcher(settings, redis_url, name, device, scorer)
        watcher.start(wait_s=3 * WATCH_TIMEOUT_S)
        return _Source(RegistryModels(watcher, device), watcher.status, watcher.close)
    r = settings.routing
    routed = RoutedModels(
        RouteStore(watch_registry(redis_url, settings.redis.key_prefix)),
        lambda model: _watcher(settings, redis_url, model, device, None),  # scored in-process
        poll_interval_s=settings.worker.model_poll_interval_s,
    ).start()
    routing = RoutingOptions(r.max_models, r.cold_start, r.max_waiting_records)
    return _Source(
        routed, routed.status, routed.close, lambda opts: routed.make_core(opts, routing)
    )


def _shadow_source(
    settings: Settings, redis_url: str, name: str, device: Any
) -> AliasModels | None:
    """The model behind ``SEQ2GMM_WORKER__SHADOW_ALIAS``, scored beside the active one
    (worker.stream.shadow); None when unset."""
    w = settings.worker
    if not w.shadow_alias:
        return None
    if settings.routing.enabled:
        raise ConfigError(
            "SEQ2GMM_WORKER__SHADOW_ALIAS is not supported with SEQ2GMM_ROUTING__ENABLED yet:"
            " run the shadow in a worker of one model (a consumer group of its own)"
        )
    reader = watch_registry(redis_url, settings.redis.key_prefix)
    watcher = alias_watcher(
        reader, name, validate_alias(w.shadow_alias), device, w.model_poll_interval_s
    )
    return AliasModels(watcher.start(wait_s=3 * WATCH_TIMEOUT_S))


def _run(args: argparse.Namespace, settings: Settings) -> int:
    endpoints = resolve_endpoints(settings)
    name = validate_name(args.model or settings.worker.model)
    device = pick_device(settings.device)
    incidents = incident_options(settings)
    topics = project_topics(settings.kafka) + ([settings.incidents.topic] if incidents else [])
    ensure_topics(endpoints.kafka_bootstrap, settings.kafka, topics)
    if incidents:
        require_partitions(
            endpoints.kafka_bootstrap, settings.kafka, settings.incidents.topic, topics[0]
        )
    w = settings.worker
    options = core_options(
        settings,
        only_anomalous=w.only_anomalous,
        include_samples=w.include_samples,
        gap_factor=w.gap_factor,
        idle_timeout_s=w.series_idle_timeout_s,
        max_series=w.max_series,
        **incidents,
    )
    routed = settings.routing.enabled
    structlog.contextvars.bind_contextvars(model="(routes)" if routed else name, device=str(device))
    cpus = usable_cpus()
    settings.batching.scoring = scoring_mode(
        settings.batching.scoring, routed=routed, device=device.type, cpus=cpus
    )
    structlog.get_logger().info("scoring_mode", mode=settings.batching.scoring, cpus=cpus)
    scorer = None
    if settings.batching.scoring == "process" and not routed:  # started now: never awaited
        scorer = ProcessScorer(device.type, settings.torch_threads).start()
    with ModelRegistry.from_url(endpoints.redis_url, settings.redis.key_prefix) as registry:
        if args.train_demo_if_missing and not routed:
            ensure_demo_model(registry, name)
        source = _model_source(settings, endpoints.redis_url, name, device, scorer)
        shadow = _shadow_source(settings, endpoints.redis_url, name, device)
        health = Health(
            stuck_after_s=settings.kafka.max_poll_interval_ms / 1000,
            registry_ok=lambda: source.status().reachable,
        )
        worker = StreamWorker(
            settings,
            endpoints.kafka_bootstrap,
            source.models,
            options,
            RunLimits(args.max_records, args.idle_timeout, args.model_wait, args.stop_at_end),
            health=health,
            core_factory=source.core_factory,
            shadow=shadow,
        )
        server = None
        if settings.metrics.port:
            metrics = WorkerMetrics(lambda: worker.core, source.status, drift=lambda: worker.drift)
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
            source.close()
            if shadow is not None:
                shadow.watcher.close()
            if scorer is not None:
                scorer.close()
            if server is not None:
                server.stop()
    print(json.dumps({"model": "(routes)" if routed else name, **summary}))
    return 0
