"""``seq2gmm worker``: the streaming worker (ts.raw -> ts.anomalies)."""

from __future__ import annotations

import argparse
from typing import Any

from worker.endpoints import resolve_endpoints
from worker.errors import Seq2GMMError
from worker.settings import Settings


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("worker", help="consume ts.raw, score windows, publish ts.anomalies")
    p.add_argument("--model", help="name of the registry model to serve")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    endpoints = resolve_endpoints(settings)
    raise Seq2GMMError(
        f"services are up (Kafka {endpoints.kafka_bootstrap}, Redis {endpoints.redis_url}), but"
        " the streaming worker itself is not implemented yet (tracked in the worker issue);"
        " stop the services with `seq2gmm dev down`"
    )
