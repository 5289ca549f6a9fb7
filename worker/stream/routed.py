"""Many models in one worker: a streaming-core lane per model, chosen per series by routes.

:class:`RoutedCore` has the interface of :class:`~worker.stream.core.StreamCore` that the Kafka
loop drives, and keeps one ``StreamCore`` (a *lane*: windowing, microbatches and counters of
one model) per served model. Each record is decoded once here, its series looked up in the
:class:`~worker.stream.routing.RouteTable`, and its samples windowed in that model's lane, so
every batch holds one model's windows and is scored and published as in the one-model worker.
Offsets stay at-least-once across lanes: a partition is committed up to the earliest record
that any lane (or the cold-start queue) still needs.

* **Route changes** take effect between batches: the table is read again before each ingest;
  a series whose model changed takes the samples buffered in its old lane to the new one (by
  their source offsets, so nothing is lost and no offset is committed early); windows the old
  lane had already cut are scored by the old model.
* **No route** (no rule, no default): the record goes to the dead-letter topic with the reason.
* **Cold start** (a routed model with no loaded version yet): ``wait`` keeps the decoded records
  (at most ``max_waiting_records``; their offsets are not committed) until the model arrives,
  ``dead_letter`` dead-letters them with the reason; a full queue dead-letters too.
* **Bounded models**: at most ``max_models`` lanes. A model needing a slot takes the least
  recently used lane that holds no samples and no windows (its model is released); when every
  lane is busy, the records of the new model are handled as a cold start, with the reason.
* A new version with another cutter takes the lane's buffered samples to a new lane (the loop
  scores and publishes what the old version owes first); one with another width is refused
  (the lane keeps serving its version): route such a model under a new name.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import structlog

from model.errors import DataError
from worker.errors import MessageError
from worker.stream.core import Batch, CoreOptions, InRecord, OutRecord, StreamCore, dead_letter
from worker.stream.incident_record import IncidentRecord
from worker.stream.messages import Decoded, decode_samples
from worker.stream.offsets import OffsetTracker
from worker.stream.routing import RouteTable
from worker.stream.served import ServedModel

log = structlog.get_logger()

_Run = list[tuple[InRecord, np.ndarray, np.ndarray]]
_Taken = tuple[int, np.ndarray, np.ndarray, np.ndarray]  # partition, offsets, timestamps, values


@dataclass(frozen=True)
class RoutingOptions:
    max_models: int = 8
    cold_start: Literal["wait", "dead_letter"] = "wait"
    max_waiting_records: int = 100_000


class _Lanes:
    """The lanes' windowers seen as one, for the loop's eviction and the metrics."""

    def __init__(self, lanes: OrderedDict[str, StreamCore]) -> None:
        self._lanes = lanes

    def __len__(self) -> int:
        return sum(len(lane.windower) for lane in self._lanes.values())

    @property
    def dropped(self) -> Counter[str]:
        return sum((lane.windower.dropped for lane in self._lanes.values()), Counter())

    def evict_idle(self) -> int:
        return sum(lane.windower.evict_idle() for lane in self._lanes.values())


class RoutedCore:
    def __init__(
        self,
        tables: Callable[[], RouteTable],
        options: CoreOptions | None = None,
        routing: RoutingOptions | None = None,
        want: Callable[[str], None] = lambda name: None,
        release: Callable[[str], None] = lambda name: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options or CoreOptions()
        self.routing = routing or RoutingOptions()
        self._tables, self._want, self._release = tables, want, release
        self._clock, self._wall = clock, wall_clock
        self.table = tables()
        self.lanes: OrderedDict[str, StreamCore] = OrderedDict()  # least recently used first
        self.windower = _Lanes(self.lanes)
        self.offsets = OffsetTracker()
        self._counters: Counter[str] = Counter(consumed=0)
        self.own_dead_letters: Counter[str] = Counter()
        self._wanted: set[str] = set()  # models asked of the source, not yet served
        self._home: dict[str, str] = {}  # series -> the lane holding its samples
        self._waiting: dict[str, list[tuple[InRecord, Decoded]]] = {}  # cold start, per model
        self._waiting_first: dict[str, dict[int, int]] = {}  # per model, partition -> offset
        self._n_waiting = 0
        self._deferred: list[OutRecord] = []  # dead letters of released records, not yet out
        self._deferred_first: dict[int, int] = {}  # their earliest offsets
        self._batch_lane: dict[int, StreamCore] = {}
        self._restored: dict[str, list[IncidentRecord]] = {}  # for lanes not open yet
        self._turn = 0  # which lane take_batch looks at first

    # ------------------------------------------------------------------ input
    def ingest(self, records: Iterable[InRecord]) -> list[OutRecord]:
        """Decode, route and window records; returns the dead letters."""
        self._refresh_table()
        dead, self._deferred, self._deferred_first = self._deferred, [], {}
        by_lane: dict[str, dict[str, _Run]] = {}
        for rec in records:
            self._counters["consumed"] += 1
            self.offsets.consumed(rec.partition, rec.offset)
            try:
                msg = decode_samples(rec.value, rec.key)
            except MessageError as exc:
                dead.append(self._dead(rec, "invalid_message", str(exc)))
                continue
            model = self.table.model_for(msg.series_id)
            if model is None:
                dead.append(self._dead(rec, "no_route", self.table.no_route_reason(msg.series_id)))
                continue
            lane = self._lane_for(model)
            if lane is None:
                dead += self._wait(model, rec, msg)
                continue
            try:
                lane.windower.check_width(msg.series_id, msg.values)
            except DataError as exc:
                dead.append(self._dead(rec, "wrong_width", str(exc)))
                continue
            _append(by_lane.setdefault(model, {}), rec, msg)
        for model, runs in by_lane.items():
            dead += self._window(model, runs)
        return dead

    def _window(self, model: str, runs: dict[str, _Run]) -> list[OutRecord]:
        lane = self.lanes[model]
        self.lanes.move_to_end(model)
        dead: list[OutRecord] = []
        for series_id, decoded in runs.items():
            self._move_home(series_id, model)
            dead += lane.window_series(series_id, decoded)
        return dead

    def _move_home(self, series_id: str, model: str) -> None:
        """Take the series' buffered samples along when its route changed lanes."""
        home = self._home.get(series_id)
        self._home[series_id] = model
        if len(self._home) > 2 * self.options.max_series + 1024:
            self._forget_homes()
        if home is None or home == model or home not in self.lanes:
            return
        taken = self.lanes[home].windower.take_series(series_id)
        if taken is None or not len(taken[2]):
            return
        self._carry(self.lanes[model], series_id, taken)
        log.info("series_rerouted", series_id=series_id, old=home, new=model, samples=len(taken[2]))

    @staticmethod
    def _carry(lane: StreamCore, series_id: str, taken: _Taken) -> None:
        """Window a series' samples taken from another lane in ``lane``. Samples the new model
        refuses (another width, a cutter's error) are dropped and counted as ``route_moved``:
        their records were decoded and accepted before, so they are not dead-lettered again."""
        try:
            lane.add_samples(series_id, *taken, count=False)
        except DataError as exc:
            log.error("route_move_failed", series_id=series_id, error=str(exc))
            lane.windower.dropped["route_moved"] += len(taken[2])

    def _forget_homes(self) -> None:
        """Drop the homes of series no lane tracks any more (evicted idle or over the cap)."""
        self._home = {
            s: m for s, m in self._home.items() if m in self.lanes and s in self.lanes[m].windower
        }

    def _refresh_table(self) -> None:
        table = self._tables()
        if table is not self.table:
            if table.revision != self.table.revision:
                log.info("routes_changed", revision=table.revision, models=sorted(table.models()))
            self.table = table

    # ------------------------------------------------------------------ models and lanes
    def _lane_for(self, model: str) -> StreamCore | None:
        """The lane of ``model``, or None while it has no version here (asked of the source
        once, when there is a slot)."""
        lane = self.lanes.get(model)
        if lane is not None or model in self._wanted:
            return lane
        if len(self.lanes) + len(self._wanted) >= self.routing.max_models:
            self._evict_idle_lane()
        if len(self.lanes) + len(self._wanted) < self.routing.max_models:
            self._wanted.add(model)
            self._want(model)
        return None

    def _evict_idle_lane(self) -> None:
        for name, lane in self.lanes.items():  # least recently used first
            if not lane.backlog() and not lane.windower.buffered_samples():
                del self.lanes[name]
                self._release(name)
                log.info("model_unloaded", model=name, reason="least recently used idle lane")
                return

    def served(self) -> list[tuple[ServedModel, Counter[str]]]:
        return [(lane.model, lane.counters) for lane in self.lanes.values()]

    def serves(self, model: ServedModel) -> bool:
        lane = self.lanes.get(model.name)
        return lane is not None and lane.serves(model)

    def swap_model(self, model: ServedModel) -> dict[int, int]:
        """Serve ``model`` in its lane (new lane, or a new version); never rewinds. Call it
        with no batch in flight."""
        self._wanted.discard(model.name)
        lane = self.lanes.get(model.name)
        if lane is None:
            lane = self.lanes[model.name] = StreamCore(model, self.options, self._clock, self._wall)
            lane.restore_incidents(self._restored.pop(model.name, []))
            log.info("model_lane_opened", model=model.name, version=model.version)
        elif lane.model.n_features != model.n_features:
            log.error(
                "model_version_refused",
                model=model.name,
                version=model.version,
                reason=f"it expects {model.n_features} features, the served version"
                f" {lane.model.n_features}; publish it under a new name and route to it",
            )
            return {}
        elif lane.model.cutter.to_config() != model.cutter.to_config():
            self._recut(lane, model)
        else:
            lane.swap_model(model)
        self._release_waiting(model.name)
        return {}

    def _recut(self, old: StreamCore, model: ServedModel) -> None:
        """A new lane with ``model``'s cutter, going on from the old lane's buffered samples."""
        assert not old.backlog(), "recut with windows owed: score and publish them first"
        lane = StreamCore(model, self.options, self._clock, self._wall)
        lane.counters = old.counters
        self.lanes[model.name] = lane
        for series_id in [s for s, m in self._home.items() if m == model.name]:
            taken = old.windower.take_series(series_id)
            if taken is not None and len(taken[2]):
                self._carry(lane, series_id, taken)

    def _wait(self, model: str, rec: InRecord, msg: Decoded) -> list[OutRecord]:
        if self.routing.cold_start == "dead_letter":
            return [self._dead(rec, "cold_start", self._cold_reason(model))]
        if self._n_waiting >= self.routing.max_waiting_records:
            reason = self._cold_reason(model) + (
                f"; the cold-start queue is full ({self._n_waiting} records,"
                " SEQ2GMM_ROUTING__MAX_WAITING_RECORDS)"
            )
            return [self._dead(rec, "cold_start_overflow", reason)]
        self._waiting.setdefault(model, []).append((rec, msg))
        self._waiting_first.setdefault(model, {}).setdefault(rec.partition, rec.offset)
        self._n_waiting += 1
        return []

    def _cold_reason(self, model: str) -> str:
        if model in self._wanted or model in self.lanes:
            return (
                f"model {model!r} has no active version yet (cold start); publish and promote"
                f" one with `seq2gmm models publish DIR --name {model} --promote`"
            )
        return (
            f"model {model!r} cannot be loaded: this worker serves at most"
            f" {self.routing.max_models} models at once and none is idle"
            " (SEQ2GMM_ROUTING__MAX_MODELS); raise it or route to fewer models"
        )

    def _release_waiting(self, model: str) -> None:
        """Window the records that waited for ``model``, in their order. Their dead letters
        (a wrong width, a cutter's failure) leave with the next :meth:`ingest`; until then
        their offsets stay uncommittable."""
        waiting = self._waiting.pop(model, [])
        first = self._waiting_first.pop(model, {})
        if not waiting:
            return
        self._n_waiting -= len(waiting)
        lane = self.lanes[model]
        runs: dict[str, _Run] = {}
        dead: list[OutRecord] = []
        for rec, msg in waiting:
            try:
                lane.windower.check_width(msg.series_id, msg.values)
            except DataError as exc:
                dead.append(self._dead(rec, "wrong_width", str(exc)))
                continue
            _append(runs, rec, msg)
        dead += self._window(model, runs)
        if dead:
            self._deferred.extend(dead)
            for p, o in first.items():
                self._deferred_first[p] = min(o, self._deferred_first.get(p, o))
        log.info("cold_start_released", model=model, records=len(waiting))

    def _dead(self, rec: InRecord, kind: str, reason: str) -> OutRecord:
        self.own_dead_letters[kind] += 1
        return dead_letter(self.options.dead_letter_topic, rec, reason)

    # ------------------------------------------------------------------ scoring
    def ready(self) -> bool:
        return any(lane.ready() for lane in self.lanes.values())

    def backlog(self) -> int:
        return sum(lane.backlog() for lane in self.lanes.values())

    def take_batch(self) -> Batch | None:
        """The next ready lane's microbatch, the lanes taking turns."""
        lanes = list(self.lanes.values())
        for k in range(len(lanes)):
            lane = lanes[(self._turn + k) % len(lanes)]
            if lane.ready():
                self._turn = (self._turn + k + 1) % len(lanes)
                batch = lane.take_batch()
                if batch is not None:
                    self._batch_lane[id(batch)] = lane
                    return batch
        return None

    def score(self, batch: Batch) -> None:
        self._batch_lane[id(batch)].score(batch)

    def complete(self, batch: Batch) -> list[OutRecord]:
        return self._batch_lane.pop(id(batch)).complete(batch)

    def score_batch(self) -> list[OutRecord]:
        batch = self.take_batch()
        if batch is None:
            return []
        self.score(batch)
        return self.complete(batch)

    # ------------------------------------------------------------------ offsets & lifecycle
    def pending(self) -> list[dict[int, int]]:
        out = [self._deferred_first, *self._waiting_first.values()]
        for lane in self.lanes.values():
            out += lane.pending()
        return out

    def committable(self) -> dict[int, int]:
        return self.offsets.committable(*self.pending())

    def committable_positions(self) -> dict[int, int]:
        return self.offsets.positions(*self.pending())

    def mark_committed(self, offsets: dict[int, int]) -> None:
        self.offsets.mark_committed(offsets)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        parts = set(partitions)
        for lane in self.lanes.values():
            lane.forget_partitions(parts)
        self.offsets.forget_partitions(parts)
        for name, recs in self._restored.items():
            self._restored[name] = [r for r in recs if r.source.partition not in parts]
        for model in list(self._waiting):
            kept = [(r, m) for r, m in self._waiting[model] if r.partition not in parts]
            self._n_waiting -= len(self._waiting[model]) - len(kept)
            self._waiting[model] = kept
            first = self._waiting_first[model]
            for p in parts:
                first.pop(p, None)

    # ------------------------------------------------------------------ incidents
    def restore_incidents(self, records: Iterable[IncidentRecord]) -> int:
        """Incident state read back on assignment, to the lane of each record's model (kept
        until that lane opens: models load as their series arrive)."""
        by_model: dict[str, list[IncidentRecord]] = {}
        for r in records:
            by_model.setdefault(r.model.name, []).append(r)
        restored = 0
        for name, recs in by_model.items():
            lane = self.lanes.get(name)
            if lane is not None:
                restored += lane.restore_incidents(recs)
            else:
                self._restored.setdefault(name, []).extend(recs)
        return restored

    def pending_incident_updates(self) -> list[OutRecord]:
        return [r for lane in self.lanes.values() for r in lane.pending_incident_updates()]

    def incident_stats(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for lane in self.lanes.values():
            total.update(lane.incident_stats())
        return dict(total)

    @property
    def counters(self) -> Counter[str]:
        total = Counter(self._counters)
        for lane in self.lanes.values():
            total.update({k: v for k, v in lane.counters.items() if k != "consumed"})
        return total

    @property
    def dead_letters(self) -> Counter[str]:
        return sum(
            (lane.dead_letters for lane in self.lanes.values()), Counter(self.own_dead_letters)
        )

    def stats(self) -> dict[str, object]:
        lanes = {name: lane.stats() for name, lane in self.lanes.items()}
        return {
            **self.counters,
            "dead_lettered": sum(self.dead_letters.values()),
            "dead_letters": dict(self.dead_letters),
            "dropped": dict(self.windower.dropped),
            "series": len(self.windower),
            "waiting_records": self._n_waiting,
            "routes_revision": self.table.revision,
            "models": {
                n: {"version": s["model_version"], "scored": s["scored"]} for n, s in lanes.items()
            },
        }


def _append(runs: dict[str, _Run], rec: InRecord, msg: Decoded) -> None:
    """Add a decoded record to its series' run (series kept in the order of their last record,
    as StreamCore orders them)."""
    decoded = runs.pop(msg.series_id, [])
    decoded.append((rec, msg.timestamps, msg.values))
    runs[msg.series_id] = decoded
