"""``seq2gmm dev up|down|status``: the embedded Kafka broker and Redis for development."""

from __future__ import annotations

import argparse
import json
from typing import Any

from worker.dev.endpoints import configured
from worker.dev.services import DevServices
from worker.ops.settings import Settings
from worker.stream.topics import ensure_topics


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "dev", help="start/stop the embedded Kafka broker (tansu) and Redis (valkey)"
    )
    dsub = p.add_subparsers(dest="dev_command", metavar="ACTION", required=True)
    up = dsub.add_parser("up", help="start both services (idempotent) and create the topics")
    up.add_argument(
        "--unless-configured",
        action="store_true",
        help="start only the services whose endpoint is not configured"
        " (SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS / SEQ2GMM_REDIS__URL)",
    )
    up.add_argument("--json", action="store_true", help="print the endpoints as JSON")
    up.set_defaults(handler=_up)
    down = dsub.add_parser("down", help="stop both services (valkey flushes its AOF)")
    down.set_defaults(handler=_down)
    status = dsub.add_parser("status", help="show whether they run and where")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)


def _up(args: argparse.Namespace, settings: Settings) -> int:
    kafka_cfg, redis_cfg = configured(settings)
    want_kafka = not (args.unless_configured and kafka_cfg)
    want_redis = not (args.unless_configured and redis_cfg)
    dev = DevServices(settings.dev)
    if not (want_kafka or want_redis):
        print("Kafka and Redis are configured externally; no embedded service started.")
        return 0
    endpoints = dev.up(kafka=want_kafka, redis=want_redis)
    created: list[str] = []
    if want_kafka:
        created = ensure_topics(endpoints.kafka_bootstrap, settings.kafka)
    result = {
        "kafka_bootstrap": endpoints.kafka_bootstrap if want_kafka else kafka_cfg,
        "redis_url": endpoints.redis_url if want_redis else "(configured externally)",
        "topics_created": created,
        "data_dir": str(settings.dev.data_dir.resolve()),
    }
    if args.json:
        print(json.dumps(result))
    else:
        if want_kafka:
            print(f"kafka  up at {endpoints.kafka_bootstrap}  (tansu, memory storage)")
        if want_redis:
            print(f"redis  up at {endpoints.redis_url}  (valkey, AOF in {result['data_dir']})")
        if created:
            print(f"topics created: {', '.join(created)}")
        print("stop them with: seq2gmm dev down")
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    stopped = DevServices(settings.dev).down()
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    status = DevServices(settings.dev).status()
    if args.json:
        print(json.dumps(status))
        return 0
    for name in ("kafka", "redis"):
        s = status[name]
        assert isinstance(s, dict)
        state = "running" if s["running"] else "stopped"
        extra = f" pid {s['pid']}, answering: {s['answering']}" if s["running"] else ""
        print(f"{name:6} {state:8} {s['url']}{extra}")
    return 0
