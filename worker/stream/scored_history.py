"""The scored windows of one model read back from the output topics over a time range.

``seq2gmm models compare`` and ``seq2gmm models drift`` judge models on what they published:
the records of ``ts.anomalies`` and of the shadow topic between two times, read with
:func:`~worker.stream.history.read_history` (no consumer group, nothing committed). Only the
fields a judgement needs are read from each record, so records written by other versions of the
schema (extra fields) are read too; a record that is not JSON or lacks one of them is counted as
unreadable, and a record published twice (at-least-once) is counted once.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from worker.ops.settings import KafkaSettings
from worker.stream.history import HistoryRecord, read_history


@dataclass(frozen=True)
class PublishedWindow:
    """One window as a model scored it."""

    series_id: str
    start: float  # the window's first timestamp
    version: int
    energy: float
    threshold: float
    anomalous: bool
    percentile: float
    published_ms: int  # the Kafka record's timestamp

    @property
    def key(self) -> tuple[str, float]:
        """What identifies the window whatever model scored it."""
        return (self.series_id, self.start)


@dataclass
class ScoredHistory:
    """Per version of the model, its windows (de-duplicated), and what could not be read."""

    name: str
    by_version: dict[int, dict[tuple[str, float], PublishedWindow]] = field(default_factory=dict)
    unreadable: int = 0
    other_models: int = 0
    duplicates: Counter[int] = field(default_factory=Counter)

    def add(self, record: HistoryRecord) -> None:
        window = _decode(record)
        if window is None:
            self.unreadable += 1
            return
        name, w = window
        if name != self.name:
            self.other_models += 1
            return
        windows = self.by_version.setdefault(w.version, {})
        if w.key in windows:
            self.duplicates[w.version] += 1
        windows[w.key] = w


def read_scored(
    bootstrap: str,
    kafka: KafkaSettings,
    topics: Iterable[str],
    name: str,
    since_ms: int,
    until_ms: int | None = None,
) -> ScoredHistory:
    """The windows scored by model ``name`` published on ``topics`` within the range."""
    history = ScoredHistory(name)
    for topic in topics:
        for record in read_history(bootstrap, kafka, topic, since_ms, until_ms):
            history.add(record)
    return history


def _decode(record: HistoryRecord) -> tuple[str, PublishedWindow] | None:
    try:
        doc = json.loads(record.value or b"")
        model, window = doc["model"], doc["window"]
        return str(model["name"]), PublishedWindow(
            series_id=str(doc["series_id"]),
            start=float(window["start"]),
            version=int(model["version"]),
            energy=float(doc["energy"]),
            threshold=float(doc["threshold"]),
            anomalous=bool(doc["anomalous"]),
            percentile=float(doc["percentile"]),
            published_ms=record.timestamp_ms,
        )
    except (ValueError, TypeError, KeyError):
        return None
