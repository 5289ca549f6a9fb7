"""The worker's HTTP endpoints: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

* ``/healthz``: 200 while the process runs and its poll loop ticked recently (a stuck loop,
  e.g. a hung scoring call, turns it 503 so the orchestrator restarts the pod).
* ``/readyz``: 200 when partitions are assigned and a model is loaded; ``status`` says
  "degraded: registry unreachable, serving NAME:V" (still 200) while the registry does not
  answer the model watcher, which keeps serving its model.

Both answer a small JSON body that says why. Runs in a daemon thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


@dataclass
class Health:
    """State the loop reports and the probes read (plain attributes: one writer thread).

    ``registry_ok`` says whether the model registry answered its latest poll; it must not do
    I/O (the worker passes the model watcher's last result). An unreachable registry while a
    model is served leaves the worker ready, reported as degraded.
    """

    stuck_after_s: float
    last_tick: float = field(default_factory=time.monotonic)
    assigned: int = 0
    model: str | None = None
    registry_ok: Callable[[], bool] = lambda: True
    broker_ok: bool = True  # the latest look at the partition ends got an answer

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def live(self) -> tuple[bool, dict[str, Any]]:
        since = time.monotonic() - self.last_tick
        return since < self.stuck_after_s, {"seconds_since_loop_tick": round(since, 3)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        reachable = self.registry_ok()
        live, info = self.live()
        if not live:
            status = "not ready: the poll loop is stuck"
        elif self.model is None:
            status = "not ready: no model loaded" + ("" if reachable else ", registry unreachable")
        elif self.assigned == 0:
            status = "not ready: no partition assigned"
        elif not self.broker_ok:
            status = f"degraded: Kafka broker unreachable, serving {self.model}"
        elif not reachable:
            status = f"degraded: registry unreachable, serving {self.model}"
        else:
            status = "ok"
        detail = {
            **info,
            "status": status,
            "assigned_partitions": self.assigned,
            "model": self.model,
            "registry_reachable": reachable,
            "broker_reachable": self.broker_ok,
        }
        return live and self.assigned > 0 and self.model is not None, detail


class EndpointServer:
    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health) -> None:
        server_self = self
        self.registry = registry
        self.health = health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server_self._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # no access log spam
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="seq2gmm-http", daemon=True
        )

    def start(self) -> EndpointServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        path = req.path.split("?", 1)[0]
        if path == "/metrics":
            body = generate_latest(self.registry)
            self._reply(req, 200, body, CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            ok, detail = self.health.live() if path == "/healthz" else self.health.ready()
            body = json.dumps({"ok": ok, **detail}).encode()
            self._reply(req, 200 if ok else 503, body, "application/json")
        else:
            self._reply(
                req, 404, b'{"error": "try /metrics, /healthz or /readyz"}', "application/json"
            )

    @staticmethod
    def _reply(req: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str) -> None:
        req.send_response(status)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)
