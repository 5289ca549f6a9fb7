"""Incidents: runs of anomalous windows of one series, merged into one alert with a lifecycle.

:class:`IncidentTracker` is transport-free (like river's small protocols): feed it the scored
windows of each series in order (:meth:`IncidentTracker.feed`), it returns the
:class:`~worker.stream.incident_record.IncidentRecord` events to publish. Per series:

* an anomalous window starts a *candidate*; the candidate ``open`` s once ``min_windows``
  anomalous windows arrived, with at most ``gap_tolerance`` consecutive normal windows between
  two of them (more, and the candidate is dropped without a record);
* each later anomalous window extends the open incident (peak energy and score, counts, worst
  segments, latest window); an ``update`` is emitted on such a window when at least
  ``renotify_s`` of stream time passed since the incident's previous record;
* ``resolved`` after ``resolve_after`` consecutive normal windows, or from :meth:`tick` once
  ``idle_timeout_s`` of stream time passed since the incident's latest anomalous window ended.

The clock is *stream time*, the windows' own timestamps, never the wall clock: a replay or a
backtest of the same stream gives the same records, ids and times. :meth:`feed_batch` ticks
each input partition it saw with that partition's watermark (the latest window end fed from it),
so a series that stops sending is resolved once its partition's stream moved on.

Restart and rebalance: :meth:`restore` takes back the latest record of each series (read from
``ts.incidents`` by :mod:`~worker.stream.incident_restore`); an open incident is continued and a
window it already covers (start <= its latest window's start) is ignored, so an input replayed
from the committed offset neither opens it again nor counts a window twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from worker.stream.incident_record import (
    IncidentModel,
    IncidentRecord,
    IncidentSegment,
    IncidentSource,
    IncidentWindow,
    incident_id,
)
from worker.stream.messages import record_id, window_score
from worker.stream.served import ScoredWindow, ServedModel
from worker.stream.windowing import Window

MAX_IDS = 8  # window record ids kept at each end of an incident
MAX_SEGMENTS = 5  # worst segments kept


@dataclass(frozen=True)
class IncidentConfig:
    min_windows: int = 1
    gap_tolerance: int = 1
    resolve_after: int = 3
    renotify_s: float = 300.0
    idle_timeout_s: float = 3600.0
    source_topic: str = "ts.raw"  # named in the records' ``source``

    def __post_init__(self) -> None:
        if self.min_windows < 1 or self.gap_tolerance < 0 or self.resolve_after < 1:
            raise ValueError("min_windows >= 1, gap_tolerance >= 0 and resolve_after >= 1")
        if self.renotify_s < 0 or self.idle_timeout_s <= 0:
            raise ValueError("renotify_s >= 0 and idle_timeout_s > 0")


@dataclass(frozen=True)
class WindowOutcome:
    """What the tracker needs of one scored window."""

    series_id: str
    partition: int
    record_id: str  # of its ts.anomalies record
    start: float
    end: float
    energy: float
    score: float | None
    threshold: float
    anomalous: bool
    model: tuple[str, int]  # (name, version)
    segments: tuple[tuple[float, float, float], ...] = ()  # anomalous ones: (start, end, energy)

    @classmethod
    def of(cls, model: ServedModel, w: Window, s: ScoredWindow) -> WindowOutcome:
        """The outcome of window ``w`` scored ``s`` by ``model`` (as the core publishes it)."""
        ts, thr = w.timestamps, model.threshold
        start = float(ts[0])
        return cls(
            series_id=w.series_id,
            partition=w.partition,
            record_id=record_id(w.series_id, start, model.name, model.version),
            start=start,
            end=float(ts[-1]),
            energy=s.energy,
            score=window_score(s.energy, thr),
            threshold=thr,
            anomalous=s.energy > thr,
            model=(model.name, model.version),
            segments=tuple(
                (float(ts[g.start_index]), float(ts[g.end_index]), g.energy)
                for g in s.segments
                if g.energy > thr
            ),
        )


@dataclass
class _Incident:
    id: str
    series_id: str
    partition: int
    model: tuple[str, int]
    first: tuple[float, float]
    last: tuple[float, float]
    threshold: float
    peak: tuple[float, float | None, float]  # energy, score, window start
    opened: bool = False
    windows: int = 1
    anomalous: int = 1
    normals: int = 0  # consecutive normal windows since the latest anomalous one
    segments: list[tuple[float, float, float]] = field(default_factory=list)
    first_ids: list[str] = field(default_factory=list)
    last_ids: list[str] = field(default_factory=list)
    opened_at: float = 0.0
    notified_at: float = 0.0  # stream time of its latest record
    notified_count: int = 0  # anomalous windows as of its latest record

    @classmethod
    def start(cls, w: WindowOutcome) -> _Incident:
        inc = cls(
            incident_id(w.series_id, w.model[0], w.start),
            w.series_id,
            w.partition,
            w.model,
            (w.start, w.end),
            (w.start, w.end),
            w.threshold,
            (w.energy, w.score, w.start),
            anomalous=0,
            windows=0,
        )
        inc.absorb(w)
        return inc

    def absorb(self, w: WindowOutcome) -> None:
        """Extend by the anomalous window ``w`` (and the normal ones before it)."""
        self.windows += self.normals + 1
        self.anomalous += 1
        self.normals = 0
        self.last = (w.start, w.end)
        self.model = w.model
        self.threshold = w.threshold
        if w.energy > self.peak[0] or self.anomalous == 1:
            self.peak = (w.energy, w.score, w.start)
        self.segments = sorted(self.segments + list(w.segments), key=lambda s: -s[2])
        del self.segments[MAX_SEGMENTS:]
        if len(self.first_ids) < MAX_IDS:
            self.first_ids.append(w.record_id)
        else:
            self.last_ids = [*self.last_ids[-(MAX_IDS - 1) :], w.record_id]

    def record(
        self, state: str, at: float, topic: str, resolution: str | None = None
    ) -> IncidentRecord:
        self.notified_at, self.notified_count = at, self.anomalous
        return IncidentRecord(
            id=self.id,
            state=state,  # type: ignore[arg-type]
            series_id=self.series_id,
            model=IncidentModel(name=self.model[0], version=self.model[1]),
            first_window=IncidentWindow(start=self.first[0], end=self.first[1]),
            last_window=IncidentWindow(start=self.last[0], end=self.last[1]),
            window_count=self.windows,
            anomalous_count=self.anomalous,
            peak_energy=self.peak[0],
            peak_score=self.peak[1],
            peak_window_start=self.peak[2],
            threshold=self.threshold,
            worst_segments=[IncidentSegment(start=s, end=e, energy=x) for s, e, x in self.segments],
            first_window_ids=list(self.first_ids),
            last_window_ids=list(self.last_ids),
            opened_at=self.opened_at,
            updated_at=at,
            resolution=resolution,  # type: ignore[arg-type]
            source=IncidentSource(topic=topic, partition=self.partition),
        )

    @classmethod
    def from_record(cls, r: IncidentRecord) -> _Incident:
        return cls(
            r.id,
            r.series_id,
            r.source.partition,
            (r.model.name, r.model.version),
            (r.first_window.start, r.first_window.end),
            (r.last_window.start, r.last_window.end),
            r.threshold,
            (r.peak_energy, r.peak_score, r.peak_window_start),
            opened=True,
            windows=r.window_count,
            anomalous=r.anomalous_count,
            segments=[(s.start, s.end, s.energy) for s in r.worst_segments],
            first_ids=list(r.first_window_ids),
            last_ids=list(r.last_window_ids),
            opened_at=r.opened_at,
            notified_at=r.updated_at,
            notified_count=r.anomalous_count,
        )


class IncidentTracker:
    """Per series, the incident (or candidate) in progress; see the module docstring."""

    def __init__(self, config: IncidentConfig | None = None) -> None:
        self.config = config or IncidentConfig()
        self.counters: Counter[str] = Counter(opened=0, updated=0, resolved=0)
        self._incidents: dict[str, _Incident] = {}  # by series id: candidates and open ones
        self._covered: dict[str, tuple[int, float]] = {}  # restored: (partition, last start)
        self._watermarks: dict[int, float] = {}  # per input partition: latest window end fed

    @property
    def open_count(self) -> int:
        return sum(1 for inc in self._incidents.values() if inc.opened)

    def stats(self) -> dict[str, int]:
        """For the worker's stats line and run summary."""
        return {
            "incidents_opened": self.counters["opened"],
            "incidents_resolved": self.counters["resolved"],
            "incidents_open": self.open_count,
        }

    def feed(self, w: WindowOutcome) -> list[IncidentRecord]:
        """One scored window (in order within its series); returns the records it causes."""
        p = w.partition
        self._watermarks[p] = max(self._watermarks.get(p, w.end), w.end)
        covered = self._covered.get(w.series_id)
        if covered is not None:
            if w.start <= covered[1]:
                return []  # replayed: the restored incident has it already
            del self._covered[w.series_id]
        inc = self._incidents.get(w.series_id)
        if w.anomalous:
            return self._anomalous(inc, w)
        if inc is None:
            return []
        inc.normals += 1
        if not inc.opened:
            if inc.normals > self.config.gap_tolerance:
                del self._incidents[w.series_id]  # a candidate that never opened
            return []
        if inc.normals >= self.config.resolve_after:
            return [self._resolve(inc, w.end, "normal_windows")]
        return []

    def _anomalous(self, inc: _Incident | None, w: WindowOutcome) -> list[IncidentRecord]:
        cfg = self.config
        if inc is None:
            inc = self._incidents[w.series_id] = _Incident.start(w)
        else:
            inc.absorb(w)
        if not inc.opened:
            if inc.anomalous < cfg.min_windows:
                return []
            inc.opened = True
            inc.opened_at = w.end
            self.counters["opened"] += 1
            return [inc.record("open", w.end, cfg.source_topic)]
        if w.end - inc.notified_at >= cfg.renotify_s:
            self.counters["updated"] += 1
            return [inc.record("update", w.end, cfg.source_topic)]
        return []

    def _resolve(self, inc: _Incident, at: float, why: str) -> IncidentRecord:
        del self._incidents[inc.series_id]
        self.counters["resolved"] += 1
        return inc.record("resolved", at, self.config.source_topic, why)

    def tick(self, now: float, partition: int | None = None) -> list[IncidentRecord]:
        """Resolve the incidents (of ``partition``, or all) whose latest anomalous window ended
        ``idle_timeout_s`` or more before ``now`` (stream time); drop such candidates."""
        out = []
        limit = now - self.config.idle_timeout_s
        for inc in list(self._incidents.values()):
            if (partition is None or inc.partition == partition) and inc.last[1] <= limit:
                if inc.opened:
                    out.append(self._resolve(inc, now, "idle_timeout"))
                else:
                    del self._incidents[inc.series_id]
        return out

    def feed_batch(self, windows: Iterable[WindowOutcome]) -> list[IncidentRecord]:
        """:meth:`feed` each window, then :meth:`tick` each partition seen at its watermark."""
        out: list[IncidentRecord] = []
        seen: set[int] = set()
        for w in windows:
            out += self.feed(w)
            seen.add(w.partition)
        for p in sorted(seen):
            out += self.tick(self._watermarks[p], p)
        return out

    def pending_updates(self) -> list[IncidentRecord]:
        """An ``update`` of each open incident that changed since its latest record (the
        worker publishes them before a clean shutdown, so its successor restores them whole)."""
        out = []
        for inc in self._incidents.values():
            if inc.opened and inc.anomalous != inc.notified_count:
                self.counters["updated"] += 1
                out.append(inc.record("update", inc.last[1], self.config.source_topic))
        return out

    def restore(self, records: Iterable[IncidentRecord]) -> int:
        """Take back the latest state of each series from its incident records (in topic
        order); returns how many open incidents were restored. Windows up to the latest record's
        last window are then ignored (they were counted before)."""
        latest: dict[str, IncidentRecord] = {}
        for r in records:
            latest[r.series_id] = r
        restored = 0
        for sid, r in latest.items():
            self._covered[sid] = (r.source.partition, r.last_window.start)
            if r.state == "resolved":
                self._incidents.pop(sid, None)
                continue
            self._incidents[sid] = _Incident.from_record(r)
            restored += 1
        return restored

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Drop the state of series on ``partitions`` (revoked: their new owner restores it)."""
        parts = set(partitions)
        self._incidents = {s: i for s, i in self._incidents.items() if i.partition not in parts}
        self._covered = {s: c for s, c in self._covered.items() if c[0] not in parts}
        for p in parts:
            self._watermarks.pop(p, None)
