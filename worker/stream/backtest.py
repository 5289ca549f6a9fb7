"""Backtests: replay records through the streaming core offline, and judge what it flags.

:func:`replay` feeds in-memory :class:`~worker.stream.core.InRecord` s to a
:class:`~worker.stream.core.StreamCore` (the worker's decoding, windowing, microbatching and
scoring; no consumer group, nothing published) and keeps every window record the worker would
have published, parsed back from its bytes: a backtest's energies are the streamed ones.
:func:`window_labels` labels windows from point labels, :func:`metrics` gives precision,
recall and F1 of the flags, :func:`compare` two replays of the same data. Transport-free.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from typing import Any

import numpy as np

from model.evaluation.metrics import precision_recall_f1
from worker.stream.core import CoreOptions, InRecord, StreamCore
from worker.stream.incident_record import IncidentRecord
from worker.stream.messages import AnomalyRecord
from worker.stream.served import ServedModel

WindowKey = tuple[str, float]  # (series id, timestamp of the window's first sample)


@dataclass(frozen=True)
class BacktestWindow:
    series_id: str
    start: float
    end: float
    n_samples: int
    energy: float
    threshold: float
    anomalous: bool
    percentile: float
    quality: tuple[str, ...] = ()

    @property
    def key(self) -> WindowKey:
        return (self.series_id, self.start)

    @property
    def score(self) -> float:
        """``energy / threshold`` (> 1: anomalous) for a positive threshold, else NaN."""
        return self.energy / self.threshold if self.threshold > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "quality": list(self.quality), "score": self.score}


@dataclass
class Replay:
    """The windows one model scored over the replayed records, in scoring order."""

    model: str
    version: int
    threshold: float
    windows: list[BacktestWindow]
    records: int  # input records replayed
    dead_letters: Counter[str] = field(default_factory=Counter)  # by reason kind
    dropped_samples: dict[str, int] = field(default_factory=dict)  # by reason
    incidents: list[IncidentRecord] = field(default_factory=list)  # with incident options

    def incident_summary(self) -> list[dict[str, Any]]:
        """Each incident that would open, in its latest state (one line per incident id)."""
        latest: dict[str, IncidentRecord] = {}
        for r in self.incidents:
            latest[r.id] = r
        return [
            {
                "id": r.id,
                "series_id": r.series_id,
                "state": r.state,
                "first_window_start": r.first_window.start,
                "last_window_start": r.last_window.start,
                "anomalous_windows": r.anomalous_count,
                "peak_score": r.peak_score,
            }
            for r in latest.values()
        ]

    @property
    def flagged(self) -> list[BacktestWindow]:
        return [w for w in self.windows if w.anomalous]

    def by_key(self) -> dict[WindowKey, BacktestWindow]:
        return {w.key: w for w in self.windows}

    def top(self, n: int) -> list[BacktestWindow]:
        """The ``n`` highest-energy windows, highest first."""
        return sorted(self.windows, key=lambda w: -w.energy)[:n]

    def summary(self, top: int = 10) -> dict[str, Any]:
        n = len(self.windows)
        return {
            "model": {"name": self.model, "version": self.version, "threshold": self.threshold},
            "records": self.records,
            "windows": n,
            "flagged": len(self.flagged),
            "rate": len(self.flagged) / n if n else None,
            "dead_letters": dict(self.dead_letters),
            "dropped_samples": self.dropped_samples,
            "top": [w.to_dict() for w in self.top(top)],
            "incidents": self.incident_summary(),
            "incident_records": len(self.incidents),
        }


def _chunks(records: Iterable[InRecord], size: int) -> Iterator[list[InRecord]]:
    it = iter(records)
    while chunk := list(islice(it, size)):
        yield chunk


def replay(
    model: ServedModel,
    records: Iterable[InRecord],
    options: CoreOptions | None = None,
    *,
    chunk: int = 1000,
) -> Replay:
    """Every window ``model`` scores over ``records`` (in order), as the worker would publish
    them; ``options.only_anomalous`` is ignored (every window is kept)."""
    opts = options or CoreOptions()
    core = StreamCore(model, replace(opts, only_anomalous=False))
    topic, incidents_topic = core.options.anomalies_topic, core.options.incidents_topic
    windows: list[BacktestWindow] = []
    incidents: list[IncidentRecord] = []
    for part in _chunks(records, chunk):
        core.ingest(part)  # dead letters are counted by the core; nothing is published
        while core.backlog():
            out = core.score_batch()
            windows += [_window(r.value) for r in out if r.topic == topic]
            incidents += [_incident(r.value) for r in out if r.topic == incidents_topic]
    incidents += [_incident(r.value) for r in core.pending_incident_updates()]
    return Replay(
        model=model.name,
        version=model.version,
        threshold=float(model.threshold),
        windows=windows,
        records=core.counters["consumed"],
        dead_letters=Counter(core.dead_letters),
        dropped_samples=dict(core.windower.dropped),
        incidents=incidents,
    )


def _incident(value: bytes) -> IncidentRecord:
    return IncidentRecord.model_validate_json(value)


def _window(value: bytes) -> BacktestWindow:
    rec = AnomalyRecord.model_validate_json(value)
    return BacktestWindow(
        series_id=rec.series_id,
        start=rec.window.start,
        end=rec.window.end,
        n_samples=rec.window.n_samples,
        energy=rec.energy,
        threshold=rec.threshold,
        anomalous=rec.anomalous,
        percentile=rec.percentile,
        quality=tuple(rec.quality),
    )


# ------------------------------------------------------------------ labels and metrics


def window_labels(
    windows: Iterable[BacktestWindow], points: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """(N,) 0/1 per window: 1 when a labelled point of its series (``points[series_id]`` =
    (increasing timestamps, 0/1 labels)) lies within [start, end]; -1 for a series without
    labels."""
    out = []
    for w in windows:
        if w.series_id not in points:
            out.append(-1)
            continue
        ts, labels = points[w.series_id]
        lo = int(np.searchsorted(ts, w.start, side="left"))
        hi = int(np.searchsorted(ts, w.end, side="right"))
        out.append(int(np.any(np.asarray(labels[lo:hi]) > 0)))
    return np.array(out, dtype=np.int64)


def metrics(replay_: Replay, labels: np.ndarray) -> dict[str, Any]:
    """Precision, recall and F1 of the windows' flags against their 0/1 ``labels`` (windows
    labelled -1, of series without labels, are left out)."""
    known = labels >= 0
    energies = np.array([w.energy for w in replay_.windows], dtype=np.float64)
    prf = precision_recall_f1(labels[known], energies[known], replay_.threshold)
    return {
        "labelled_windows": int(known.sum()),
        "anomalous_windows": int(labels[known].sum()),
        **asdict(prf),
    }


def compare(a: Replay, b: Replay, *, listed: int = 20) -> dict[str, Any]:
    """Where two versions' flags differ on the same data: agreement over the windows both
    scored, the windows flagged by one and not the other (highest energy first, at most
    ``listed`` each), and the windows only one of them cut (another cutter)."""
    ka, kb = a.by_key(), b.by_key()
    common = [k for k in ka if k in kb]
    same = sum(1 for k in common if ka[k].anomalous == kb[k].anomalous)
    only_a = sorted(
        (ka[k] for k in common if ka[k].anomalous and not kb[k].anomalous), key=lambda w: -w.energy
    )
    only_b = sorted(
        (kb[k] for k in common if kb[k].anomalous and not ka[k].anomalous), key=lambda w: -w.energy
    )
    return {
        "a": {"name": a.model, "version": a.version},
        "b": {"name": b.model, "version": b.version},
        "common_windows": len(common),
        "agreement": same / len(common) if common else None,
        "flagged_by_a_only": len(only_a),
        "flagged_by_b_only": len(only_b),
        "a_only": [w.to_dict() for w in only_a[:listed]],
        "b_only": [w.to_dict() for w in only_b[:listed]],
        "windows_only_in_a": len(ka) - len(common),
        "windows_only_in_b": len(kb) - len(common),
    }
