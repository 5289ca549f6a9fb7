"""The routing table in Redis: one JSON document, changed atomically, with a history.

Keys (under the registry's prefix): ``{prefix}:routes`` holds the table
(:class:`~worker.stream.routing.RouteTable` as JSON, with a revision that grows by one per
change), ``{prefix}:routes:history`` every change (revision, action, rule, time, by whom), and
each change is announced on ``{prefix}:routes:changes``. A change is optimistic: the table is
read under ``WATCH`` and written in one ``MULTI``; a concurrent change makes it start over from
the newer table, so two operators' edits never overwrite each other.
Workers read the table in the background and switch to a new revision between batches.
"""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Callable
from typing import Any

import redis

from worker.registry.connection import as_text, service_errors
from worker.registry.errors import RegistryError
from worker.registry.reader import RegistryReader
from worker.stream.routing import RouteTable

MAX_ATTEMPTS = 100


class RouteStore:
    """Read and change the routing table stored beside the registry of ``reader``."""

    def __init__(self, reader: RegistryReader) -> None:
        self.reader = reader
        self.client: redis.Redis = reader.client
        self.where = reader.where
        self.key = f"{reader.prefix}:routes"
        self.history_key = f"{self.key}:history"
        self.channel = f"{self.key}:changes"

    @service_errors
    def get(self) -> RouteTable:
        """The stored table (an empty one, revision 0, when none was ever written)."""
        raw = self.client.get(self.key)
        return RouteTable() if raw is None else RouteTable.from_json(raw)

    @service_errors
    def revision(self) -> int:
        """The stored table's revision, cheaply (for watchers that poll)."""
        return self.get().revision

    def add(self, pattern: str, model: str, position: int | None = None) -> RouteTable:
        return self._change(
            lambda t: t.with_rule(pattern, model, position),
            {"action": "add", "pattern": pattern, "model": model, "position": position},
        )

    def remove(self, pattern: str) -> RouteTable:
        return self._change(
            lambda t: t.without_rule(pattern), {"action": "remove", "pattern": pattern}
        )

    def set_default(self, model: str | None) -> RouteTable:
        return self._change(lambda t: t.with_default(model), {"action": "default", "model": model})

    @service_errors
    def history(self) -> list[dict[str, Any]]:
        return [json.loads(as_text(e)) for e in self.client.lrange(self.history_key, 0, -1)]

    @service_errors
    def _change(
        self, edit: Callable[[RouteTable], RouteTable], entry: dict[str, Any]
    ) -> RouteTable:
        for attempt in range(MAX_ATTEMPTS):
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(self.key)
                    raw = pipe.get(self.key)
                    old = RouteTable() if raw is None else RouteTable.from_json(raw)
                    new = edit(old)
                    new = RouteTable(new.rules, new.default, old.revision + 1)
                    record = json.dumps({**entry, **_stamp(new.revision)})
                    pipe.multi()
                    pipe.set(self.key, new.to_json())
                    pipe.rpush(self.history_key, record)
                    pipe.publish(self.channel, record)
                    pipe.execute()
                    return new
                except redis.WatchError:  # another change landed first: start again from it
                    time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 20)))  # de-synchronise
        raise RegistryError(
            f"the routing table kept changing under {MAX_ATTEMPTS} attempts; try again"
        )


def _stamp(revision: int) -> dict[str, Any]:
    return {"revision": revision, "time": time.time(), "by": socket.gethostname()}
