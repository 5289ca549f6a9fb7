"""The routed worker's model source: the routing table and one watcher per served model.

A background thread reads the routing table (:class:`~worker.registry.routes.RouteStore`) every
poll interval, on its own short-timeout connection, and keeps the last good one (an unreachable
or malformed table keeps the previous one, logged once). The routed core asks for a model when
a series first routes to it (:meth:`RoutedModels.want` starts an
:class:`~worker.registry.watcher.ActiveModelWatcher` for it, in the background) and gives it
back when its lane is unloaded (:meth:`release`). :meth:`poll` hands the loop one newly loaded
version at a time, between batches. Nothing here calls Redis on the loop's thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import structlog

from model.errors import Seq2GMMError
from worker.registry.routes import RouteStore
from worker.registry.watcher import WatcherStatus
from worker.stream.core import CoreOptions
from worker.stream.routed import RoutedCore, RoutingOptions
from worker.stream.routing import RouteTable
from worker.stream.served import ServedModel

log = structlog.get_logger()


class RoutedModels:
    def __init__(
        self,
        routes: RouteStore,
        make_watcher: Callable[[str], Any],
        poll_interval_s: float = 5.0,
    ) -> None:
        self.routes = routes
        self._make_watcher = make_watcher
        self.poll_interval_s = poll_interval_s
        self._table = RouteTable()
        self._table_ok: bool | None = None  # the last read's outcome (None: not read yet)
        self._watchers: dict[str, Any] = {}
        self._handed: dict[str, Any] = {}  # per model, the LoadedVersion the loop last got
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the routing table
    def start(self) -> RoutedModels:
        """Read the table once now, then every poll interval in a daemon thread."""
        self._read_table()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="routes-watcher", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            self._read_table()

    def _read_table(self) -> None:
        try:
            table = self.routes.get()
        except Seq2GMMError as exc:
            if self._table_ok is not False:
                log.warning(
                    "routes_unreadable", error=str(exc), serving_revision=self._table.revision
                )
            self._table_ok = False
            return
        self._table_ok = True
        if table.revision != self._table.revision:
            self._table = table

    def table(self) -> RouteTable:
        """The last table read (no I/O)."""
        return self._table

    def reachable(self) -> bool:
        return self.status().reachable

    def status(self) -> WatcherStatus:
        """The watchers' statuses as one (no I/O): reachable when the table and every model's
        pointer were read at the last look; load failures summed."""
        statuses = [w.status() for w in list(self._watchers.values())]
        serving = [s.serving for s in statuses if s.serving]
        return WatcherStatus(
            serving=", ".join(serving) or None,
            source="registry",
            reachable=self._table_ok is not False and all(s.reachable for s in statuses),
            last_ok_age_s=None,
            error="; ".join(s.error for s in statuses if s.error) or None,
            load_failures=sum(s.load_failures for s in statuses),
        )

    # ------------------------------------------------------------------ models
    def want(self, name: str) -> None:
        """Follow ``name``'s active version from now on (loaded in the background)."""
        if name not in self._watchers:
            self._watchers[name] = self._make_watcher(name).start()
            log.info("model_wanted", model=name)

    def release(self, name: str) -> None:
        """Stop following ``name`` (its lane was unloaded); does not wait for the thread."""
        watcher = self._watchers.pop(name, None)
        self._handed.pop(name, None)
        if watcher is not None:
            watcher.close(timeout_s=0)

    def loaded(self) -> int:
        return sum(1 for w in self._watchers.values() if w.current() is not None)

    def current(self) -> ServedModel | None:
        """A routed worker starts without a model: its core asks for them as series arrive."""
        return None

    def poll(self) -> ServedModel | None:
        """One model whose watcher loaded a version since the loop last asked, else None."""
        for name, watcher in list(self._watchers.items()):
            loaded = watcher.current()
            if loaded is not None and loaded is not self._handed.get(name):
                self._handed[name] = loaded
                return loaded.model
        return None

    def make_core(self, options: CoreOptions, routing: RoutingOptions) -> RoutedCore:
        return RoutedCore(self.table, options, routing, want=self.want, release=self.release)

    def close(self) -> None:
        self._stop.set()
        for name in list(self._watchers):
            self.release(name)
