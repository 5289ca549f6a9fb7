"""The transport-free streaming core: records in, anomaly and dead-letter records out.

The Kafka loop (:mod:`worker.stream.kafka_loop`) polls, hands the records to
:meth:`StreamCore.ingest`, publishes what :meth:`StreamCore.score_batch` returns, flushes the
producer, and only then commits :meth:`StreamCore.committable` offsets (publish, flush, commit).
Tests drive the same core with in-memory records.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from itertools import groupby

import numpy as np
import structlog

from model.errors import DataError, Seq2GMMError
from worker.errors import MessageError, WrongWidthError
from worker.stream.batching import MicroBatcher
from worker.stream.envelopes import InRecord, OutRecord, dead_letter, failed_window
from worker.stream.incident_record import IncidentRecord
from worker.stream.incidents import IncidentConfig, IncidentTracker, WindowOutcome
from worker.stream.messages import (
    AnomalyRecord,
    ModelRef,
    SegmentRecord,
    SourceRef,
    WindowRef,
    decode_samples,
    record_id,
    window_score,
)
from worker.stream.offsets import OffsetTracker
from worker.stream.served import ScoredWindow, ScoringUnavailableError, ServedModel
from worker.stream.shadow import ShadowGate, score_shadow
from worker.stream.windowing import Window, Windower, WindowingConfig

log = structlog.get_logger()

_Run = list[tuple[InRecord, np.ndarray, np.ndarray]]  # (record, timestamps, values) in order


@dataclass(eq=False)
class Batch:
    """A microbatch taken for scoring: its windows with their ready times, the model that
    scores them, and (once scored) the records to publish."""

    model: ServedModel
    windows: list[Window]
    ready_at: list[float]  # when each window was complete
    records: list[OutRecord] = field(default_factory=list)
    seconds: float = 0.0
    scored: int = 0
    anomalous: int = 0
    failed: int = 0
    revoked: set[int] = field(default_factory=set)  # partitions forgotten while in flight
    percentiles: list[float] = field(default_factory=list)  # of the scored windows (drift)
    flags: list[bool] = field(default_factory=list)  # above the threshold, per scored window
    shadow: ServedModel | None = None  # scores the same windows too (worker.stream.shadow)
    shadow_records: list[OutRecord] = field(default_factory=list)
    agreement: Counter[str] = field(default_factory=Counter)  # per window: both, active_only...
    outcomes: list[WindowOutcome] = field(default_factory=list)  # for the incident tracker

    def pending_offsets(self) -> dict[int, int]:
        """Per partition (not revoked), the earliest source offset of its windows."""
        out: dict[int, int] = {}
        for w in self.windows:
            if w.partition not in self.revoked and w.first_offset < out.get(
                w.partition, w.first_offset + 1
            ):
                out[w.partition] = w.first_offset
        return out


@dataclass(frozen=True)
class CoreOptions:
    raw_topic: str = "ts.raw"
    anomalies_topic: str = "ts.anomalies"
    dead_letter_topic: str = "ts.raw.dlq"
    max_windows: int = 256
    linger_s: float = 0.05
    only_anomalous: bool = False
    include_samples: bool = False
    gap_factor: float = 5.0
    idle_timeout_s: float = 3600.0
    max_series: int = 100_000
    shadow_topic: str = "ts.anomalies.shadow"
    incidents: IncidentConfig | None = None  # None: no incident tracking
    incidents_topic: str = "ts.incidents"


class StreamCore:
    def __init__(
        self,
        model: ServedModel,
        options: CoreOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options or CoreOptions()
        self._clock = clock
        self._wall = wall_clock
        self.counters: Counter[str] = Counter(
            dict.fromkeys(("consumed", "samples", "windows", "batches", "scored", "anomalous"), 0)
        )
        self.dead_letters: Counter[str] = Counter()
        self.offsets = OffsetTracker()
        self.batcher = MicroBatcher(self.options.max_windows, self.options.linger_s, clock)
        self.model = model
        self.windower = self._new_windower(model)
        self.batch_seconds: list[float] = []  # since the last stats() call
        self.last_batch: tuple[int, float] | None = None  # (windows, seconds) of the last one
        self._in_flight: list[Batch] = []  # taken, not yet completed (oldest first)
        self.shadow: ServedModel | None = None  # the second alias's model, set by the loop
        self.shadow_gate = ShadowGate()
        cfg = self.options.incidents
        self.incidents = IncidentTracker(cfg) if cfg is not None else None

    def _new_windower(self, model: ServedModel) -> Windower:
        o = self.options
        cfg = WindowingConfig(
            cutter=model.cutter,
            n_features=model.n_features,
            gap_factor=o.gap_factor,
            idle_timeout_s=o.idle_timeout_s,
            max_series=o.max_series,
        )
        return Windower(cfg, self._clock)

    # ------------------------------------------------------------------ input
    def ingest(self, records: Iterable[InRecord]) -> list[OutRecord]:
        """Decode and window records; returns dead-letter records for the bad ones.

        Each record is decoded and width-checked alone (a bad one is dead-lettered alone);
        then the samples of each series go to the windower in one call per run of its records
        from one partition, in record order, each sample with its record's offset: the
        windows, counters and pending offsets are those of windowing the records one by one.
        Series are windowed in the order of their last record here, so the windower's
        least-recently-updated order after the call is that of record-by-record windowing
        (only which series a windower at ``max_series`` evicts within one call may differ);
        windows are queued series by series. Should the cutter fail on a run, each of its
        records is dead-lettered with the cutter's reason.
        """
        dead: list[OutRecord] = []
        by_series = self._decode(records, dead)
        for series_id, decoded in by_series.items():
            dead += self.window_series(series_id, decoded)
        return dead

    def window_series(self, series_id: str, decoded: _Run) -> list[OutRecord]:
        """Window one series' decoded records (in order), one call per run of one partition;
        returns the dead letters (a run's records, should the cutter fail on it)."""
        runs = [decoded]
        if len({d[0].partition for d in decoded}) > 1:  # one run per partition change
            runs = [list(run) for _, run in groupby(decoded, key=lambda d: d[0].partition)]
        dead: list[OutRecord] = []
        for run in runs:
            dead += self._window_run(series_id, run)
        return dead

    def _decode(self, records: Iterable[InRecord], dead: list[OutRecord]) -> dict[str, _Run]:
        """Per series, its decoded records in order (series ordered by their last record);
        the records that fail decoding or the width check go to ``dead``."""
        by_series: dict[str, _Run] = {}
        for rec in records:
            self.counters["consumed"] += 1
            self.offsets.consumed(rec.partition, rec.offset)
            try:
                msg = decode_samples(rec.value, rec.key)
                series_id, ts, values = msg.series_id, msg.timestamps, msg.values
                self.windower.check_width(series_id, values)
            except (MessageError, DataError) as exc:
                dead.append(self._dead_letter(rec, exc))
                continue
            decoded = by_series.pop(series_id, [])  # re-inserted: last record's order
            decoded.append((rec, ts, values))
            by_series[series_id] = decoded
        return by_series

    def _window_run(self, series_id: str, run: _Run) -> list[OutRecord]:
        """Window one series' records of one partition in one call; queue its windows.
        Returns the dead letters of the run (all of it, should the cutter fail on it)."""
        if len(run) == 1:
            offsets: int | np.ndarray = run[0][0].offset
            ts, values = run[0][1], run[0][2]
        else:
            counts = [len(d[1]) for d in run]
            offsets = np.repeat(np.array([d[0].offset for d in run]), counts)
            ts = np.concatenate([d[1] for d in run])
            values = np.concatenate([d[2] for d in run])
        try:
            self.add_samples(series_id, run[0][0].partition, offsets, ts, values)
        except DataError as exc:
            return [self._dead_letter(d[0], exc) for d in run]
        return []

    def add_samples(
        self,
        series_id: str,
        partition: int,
        offsets: int | np.ndarray,
        ts: np.ndarray,
        values: np.ndarray,
        count: bool = True,
    ) -> None:
        """Window samples of one series and queue its complete windows (raises DataError when
        the cutter fails); ``count=False`` for samples counted already (moved between lanes)."""
        windows = self.windower.add(series_id, partition, offsets, ts, values)
        if count:
            self.counters["samples"] += len(ts)
        if windows:
            self.counters["windows"] += len(windows)
            self.batcher.add(windows)

    def _dead_letter(self, rec: InRecord, error: MessageError | DataError) -> OutRecord:
        kind = "wrong_width" if isinstance(error, WrongWidthError) else "invalid_message"
        self.dead_letters[kind] += 1
        return dead_letter(self.options.dead_letter_topic, rec, str(error))

    # ------------------------------------------------------------------ scoring
    def ready(self) -> bool:
        return self.batcher.ready()

    def backlog(self) -> int:
        """Complete windows not yet published: queued plus in flight."""
        return len(self.batcher) + sum(len(b.windows) for b in self._in_flight)

    def score_batch(self) -> list[OutRecord]:
        """Score one microbatch with the current model; returns the records to publish."""
        batch = self.take_batch()
        if batch is None:
            return []
        self.score(batch)
        return self.complete(batch)

    def take_batch(self) -> Batch | None:
        """The next microbatch (up to ``max_windows``), in flight until :meth:`complete`.

        Its offsets stay uncommittable while it is in flight; the model is fixed now, so a
        swap never splits a batch between versions."""
        timed = self.batcher.take()
        if not timed:
            return None
        batch = Batch(self.model, [w for _, w in timed], [t for t, _ in timed])
        batch.shadow = self.shadow_gate.admit(self.model, self.shadow, len(batch.windows))
        self._in_flight.append(batch)
        return batch

    def score(self, batch: Batch) -> None:
        """Score ``batch`` and build its records into it. Touches nothing of the core but
        the batch, so it may run on a scoring thread while the core ingests."""
        model, windows = batch.model, batch.windows
        started = self._clock()
        try:
            scored = model.score([w.values for w in windows])
            pairs = list(zip(windows, scored, strict=True))
            failed: list[tuple[Window, str]] = []
        except ScoringUnavailableError:
            raise  # not the windows' fault: stop without committing, never dead-letter them
        except Seq2GMMError:
            pairs, failed = self._score_one_by_one(model, windows)
        batch.seconds = self._clock() - started
        ready_at = {id(w): t for w, t in zip(windows, batch.ready_at, strict=True)}
        thr = model.threshold
        batch.scored = len(pairs)
        batch.anomalous = sum(1 for _, s in pairs if s.energy > thr)
        batch.failed = len(failed)
        out = [
            self._anomaly_record(model, w, s, ready_at[id(w)])
            for w, s in pairs
            if not self.options.only_anomalous or s.energy > thr
        ]
        batch.records = out + [
            failed_window(self.options.dead_letter_topic, w, reason) for w, reason in failed
        ]
        batch.percentiles = [s.percentile for _, s in pairs]
        batch.flags = [s.energy > thr for _, s in pairs]
        if batch.shadow is not None:
            score_shadow(batch, pairs, self._shadow_record)
        if self.options.incidents is not None:
            batch.outcomes = [WindowOutcome.of(model, w, s) for w, s in pairs]

    def complete(self, batch: Batch) -> list[OutRecord]:
        """Take a scored batch out of flight; returns its records to publish (none of a
        partition revoked meanwhile: its new owner re-reads those records)."""
        self._in_flight.remove(batch)
        self.counters["batches"] += 1
        self.counters["scored"] += batch.scored
        self.counters["anomalous"] += batch.anomalous
        if batch.failed:
            self.dead_letters["scoring_failed"] += batch.failed
        self.batch_seconds.append(batch.seconds)
        self.last_batch = (len(batch.windows), batch.seconds)
        log.debug(
            "batch_scored",
            windows=len(batch.windows),
            seconds=round(batch.seconds, 4),
            model=batch.model.name,
            version=batch.model.version,
        )
        self.shadow_gate.counters.update(batch.agreement)
        incidents = self._track_incidents(batch)
        records = batch.records + batch.shadow_records
        if not batch.revoked:
            return records + incidents
        return [r for r in records if r.partition not in batch.revoked] + incidents

    def _shadow_record(self, model: ServedModel, w: Window, s: ScoredWindow) -> OutRecord | None:
        """The shadow topic's record of a window the shadow model scored (none when only
        anomalous windows are published and it is not one); no end-to-end latency."""
        if self.options.only_anomalous and not s.energy > model.threshold:
            return None
        rec = self._anomaly_record(model, w, s, 0.0)
        return replace(rec, topic=self.options.shadow_topic, ready_at=None)

    def _track_incidents(self, batch: Batch) -> list[OutRecord]:
        """Feed the batch's windows (not of revoked partitions) to the incident tracker, in
        the order of completion (that of publication); returns the incident records, each to
        the partition number its windows came from (``ts.incidents`` is its own changelog)."""
        if self.incidents is None:
            return []
        kept = [o for o in batch.outcomes if o.partition not in batch.revoked]
        return self._incident_records(self.incidents.feed_batch(kept))

    def _incident_records(self, records: list[IncidentRecord]) -> list[OutRecord]:
        topic = self.options.incidents_topic
        return [
            OutRecord(
                topic,
                r.series_id.encode(),
                r.to_bytes(),
                partition=r.source.partition,
                to_partition=r.source.partition,
            )
            for r in records
        ]

    def pending_incident_updates(self) -> list[OutRecord]:
        """Updates of the open incidents changed since their latest record (on shutdown)."""
        if self.incidents is None:
            return []
        return self._incident_records(self.incidents.pending_updates())

    def incident_stats(self) -> dict[str, int]:
        """Incidents opened and resolved so far, open now ({} while incidents are off)."""
        return self.incidents.stats() if self.incidents is not None else {}

    def restore_incidents(self, records: Iterable[IncidentRecord]) -> int:
        """Take back incident state read from ``ts.incidents`` (see IncidentTracker.restore)."""
        return self.incidents.restore(records) if self.incidents is not None else 0

    def _score_one_by_one(
        self, model: ServedModel, windows: list[Window]
    ) -> tuple[list[tuple[Window, ScoredWindow]], list[tuple[Window, str]]]:
        """Isolate the window(s) that make a batch fail; they go to the dead-letter topic."""
        pairs: list[tuple[Window, ScoredWindow]] = []
        failed: list[tuple[Window, str]] = []
        for w in windows:
            try:
                pairs.append((w, model.score([w.values])[0]))
            except ScoringUnavailableError:
                raise
            except Seq2GMMError as exc:
                failed.append((w, f"scoring failed: {exc}"))
        return pairs, failed

    def _anomaly_record(
        self, model: ServedModel, w: Window, s: ScoredWindow, ready_at: float
    ) -> OutRecord:
        thr = model.threshold
        ts = w.timestamps
        rec = AnomalyRecord(
            id=record_id(w.series_id, float(ts[0]), model.name, model.version),
            score=window_score(s.energy, thr),
            series_id=w.series_id,
            model=ModelRef(name=model.name, version=model.version),
            window=WindowRef(start=float(ts[0]), end=float(ts[-1]), n_samples=len(ts)),
            energy=s.energy,
            threshold=thr,
            anomalous=s.energy > thr,
            percentile=float(np.clip(np.nan_to_num(s.percentile, nan=0.0), 0.0, 100.0)),
            segments=[
                SegmentRecord(
                    start=float(ts[seg.start_index]),
                    end=float(ts[seg.end_index]),
                    start_index=seg.start_index,
                    end_index=seg.end_index,
                    energy=seg.energy,
                    anomalous=seg.energy > thr,
                )
                for seg in s.segments
            ],
            scored_at=self._wall(),
            source=SourceRef(
                topic=self.options.raw_topic,
                partition=w.partition,
                first_offset=w.first_offset,
                last_offset=w.last_offset,
            ),
            quality=list(w.quality),
            samples=w.values.tolist() if self.options.include_samples else None,
        )
        return OutRecord(
            self.options.anomalies_topic,
            w.series_id.encode(),
            rec.to_bytes(),
            ready_at=ready_at,
            partition=w.partition,
        )

    def stats(self) -> dict[str, object]:
        """Counters so far plus batch latency since the previous call (for the stats log)."""
        lat = self.batch_seconds
        self.batch_seconds = []
        return {
            **self.counters,
            "dead_lettered": sum(self.dead_letters.values()),
            "dead_letters": dict(self.dead_letters),
            "dropped": dict(self.windower.dropped),
            "series": len(self.windower),
            "batch_seconds_mean": round(sum(lat) / len(lat), 4) if lat else None,
            "batch_seconds_max": round(max(lat), 4) if lat else None,
            "model_version": self.model.version,
            **({"shadow": dict(self.shadow_gate.counters)} if self.shadow_gate.counters else {}),
            **self.incident_stats(),
        }

    # ------------------------------------------------------------------ offsets & lifecycle
    def committable(self) -> dict[int, int]:
        """Offsets safe to commit now (only partitions that moved since the last commit)."""
        return self.offsets.committable(*self.pending())

    def committable_positions(self) -> dict[int, int]:
        """Per partition, the earliest record not fully handled (whether it moved or not)."""
        return self.offsets.positions(*self.pending())

    def pending(self) -> list[dict[int, int]]:
        """Per source of unfinished records, per partition, the earliest offset it holds."""
        batches = [b.pending_offsets() for b in self._in_flight]
        return [self.windower.pending_offsets(), self.batcher.pending_offsets(), *batches]

    def mark_committed(self, offsets: dict[int, int]) -> None:
        self.offsets.mark_committed(offsets)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        parts = list(partitions)
        self.windower.forget_partitions(parts)
        self.batcher.forget_partitions(parts)
        self.offsets.forget_partitions(parts)
        if self.incidents is not None:
            self.incidents.forget_partitions(parts)
        for batch in self._in_flight:  # its records of these partitions are not published
            batch.revoked.update(parts)

    def served(self) -> list[tuple[ServedModel, Counter[str]]]:
        """Each model served now with its counters (one here; a routed core has one a lane)."""
        return [(self.model, self.counters)]

    def serves(self, model: ServedModel) -> bool:
        """Whether ``model`` (name and version) is the one served now."""
        return (model.name, model.version) == (self.model.name, self.model.version)

    def swap_model(self, model: ServedModel) -> dict[int, int]:
        """Serve ``model`` from the next batch on.

        When it cuts series differently (another cutter or cutter setting) or expects another
        width, buffered samples and queued windows are dropped and the returned positions (per
        partition, the earliest record still needed) must be sought by the caller so those
        records are windowed again.
        Otherwise returns ``{}``. Call it with no batch in flight.
        """
        assert not self._in_flight, "swap_model with batches in flight: complete them first"
        old = self.model
        self.model = model
        if (old.cutter.to_config(), old.n_features) == (model.cutter.to_config(), model.n_features):
            return {}
        rewind = self.committable_positions()
        self.windower = self._new_windower(model)
        self.batcher.forget_partitions(list(rewind))
        self.offsets.rewind(rewind)
        return rewind
