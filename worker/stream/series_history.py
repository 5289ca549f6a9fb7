"""The samples of a topic's series over a time range, decoded exactly as the worker decodes
them: training data from the stream's history (``seq2gmm train --from-topic``).

Records come from :func:`worker.stream.history.read_history` (by timestamp, no consumer group,
nothing committed). Each is decoded by :func:`worker.stream.messages.decode_samples`, the
worker's decoder; a record that does not decode, or whose width differs from its series'
first record, is counted by reason and skipped (the worker would dead-letter it). Within a
series, a sample whose timestamp is not after every earlier one is dropped and counted, as the
worker's windower drops it. A series is kept when its id matches a glob pattern.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from model.evaluation.data import Series
from worker.errors import MessageError
from worker.ops.settings import KafkaSettings
from worker.stream.history import HistoryRecord, read_history
from worker.stream.messages import AnomalyRecord, decode_samples


@dataclass
class SeriesHistory:
    """Per matching series (sorted by id), its samples in stream order; and what was skipped."""

    series: dict[str, Series]
    records: int = 0  # read in the time range
    matched_records: int = 0  # of series matching the pattern
    skipped: Counter[str] = field(default_factory=Counter)  # records, by reason
    dropped_samples: int = 0  # not after the previous sample of their series
    first_reasons: list[str] = field(default_factory=list)  # a few skip reasons, for the user

    def summary(self) -> dict[str, object]:
        return {
            "n_series": len(self.series),
            "series": sorted(self.series)[:100],  # the first 100 ids (the metadata stays small)
            "samples": sum(len(s) for s in self.series.values()),
            "records": self.records,
            "matched_records": self.matched_records,
            "skipped_records": dict(self.skipped),
            "dropped_samples": self.dropped_samples,
        }


def series_from_records(records: Iterable[HistoryRecord], pattern: str = "*") -> SeriesHistory:
    """Gather the samples of the series whose id matches ``pattern`` (fnmatch glob)."""
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    out = SeriesHistory(series={})
    for rec in records:
        out.records += 1
        try:
            msg = decode_samples(rec.value, rec.key)
        except MessageError as exc:
            _skip(out, "invalid_message", f"{rec.partition}:{rec.offset}: {exc.reason}")
            continue
        if not fnmatch.fnmatchcase(msg.series_id, pattern):
            continue
        out.matched_records += 1
        got = parts.setdefault(msg.series_id, [])
        if got and got[0][1].shape[1] != msg.values.shape[1]:
            width = got[0][1].shape[1]
            reason = f"{msg.series_id} sends {msg.values.shape[1]} values a sample, not {width}"
            _skip(out, "wrong_width", f"{rec.partition}:{rec.offset}: {reason}")
            continue
        got.append((msg.timestamps, msg.values))
    for series_id in sorted(parts):
        out.series[series_id] = _as_series(parts[series_id], out)
    return out


def _skip(out: SeriesHistory, kind: str, reason: str) -> None:
    out.skipped[kind] += 1
    if len(out.first_reasons) < 5:
        out.first_reasons.append(reason[:300])


def _as_series(parts: list[tuple[np.ndarray, np.ndarray]], out: SeriesHistory) -> Series:
    """One series' samples in stream order, keeping only timestamps after all earlier ones;
    univariate values as (T,), like a CSV file read by ``load_series_csv``."""
    ts = np.concatenate([p[0] for p in parts])
    values = np.concatenate([p[1] for p in parts])
    keep = np.ones(len(ts), dtype=bool)
    keep[1:] = ts[1:] > np.maximum.accumulate(ts)[:-1]
    out.dropped_samples += int((~keep).sum())
    ts, values = ts[keep], values[keep]
    width = values.shape[1]
    columns = ("value",) if width == 1 else tuple(f"value{k}" for k in range(width))
    return Series(
        timestamps=ts, values=values[:, 0] if width == 1 else values, labels=None, columns=columns
    )


def read_series(
    bootstrap: str,
    kafka: KafkaSettings,
    topic: str,
    pattern: str,
    since_ms: int,
    until_ms: int | None = None,
) -> SeriesHistory:
    """The series of ``topic`` matching ``pattern`` between two times (see the module doc)."""
    return series_from_records(read_history(bootstrap, kafka, topic, since_ms, until_ms), pattern)


def flagged_windows(
    bootstrap: str,
    kafka: KafkaSettings,
    topic: str,
    since_ms: int,
    *,
    model: str | None = None,
) -> set[tuple[str, float]]:
    """(series id, window start) of every anomalous window record on ``topic`` (the
    anomalies topic) published since ``since_ms`` (of ``model`` only, when given). Records
    that do not parse are not this module's to judge: they are ignored."""
    out: set[tuple[str, float]] = set()
    for rec in read_history(bootstrap, kafka, topic, since_ms):
        try:
            window = AnomalyRecord.model_validate_json(rec.value or b"")
        except ValueError:
            continue
        if window.anomalous and (model is None or window.model.name == model):
            out.add((window.series_id, window.window.start))
    return out
