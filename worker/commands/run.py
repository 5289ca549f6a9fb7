"""``seq2gmm worker``: the streaming worker (ts.raw -> ts.anomalies)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import structlog

from worker.demo import ensure_demo_model
from worker.endpoints import resolve_endpoints
from worker.registry import ModelRegistry, validate_name
from worker.serving import RegistryModels, pick_device
from worker.settings import Settings
from worker.stream import RunLimits, StreamWorker, core_options
from worker.topics import ensure_topics
from worker.watcher import ActiveModelWatcher


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
    with ModelRegistry.from_settings(settings) as registry:
        if args.train_demo_if_missing:
            ensure_demo_model(registry, name)
        watcher = ActiveModelWatcher(
            registry,
            name,
            loader=RegistryModels.loader(device),
            poll_interval_s=w.model_poll_interval_s,
        )
        try:
            worker = StreamWorker(
                settings,
                endpoints.kafka_bootstrap,
                RegistryModels(watcher, device),
                options,
                RunLimits(args.max_records, args.idle_timeout, args.model_wait, args.stop_at_end),
            )
            worker.install_signal_handlers()
            summary = worker.run()
        finally:
            watcher.close()
    print(json.dumps({"model": name, **summary}))
    return 0
