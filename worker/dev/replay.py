"""Message sources for ``seq2gmm produce``: datasets turned into ``ts.raw`` messages.

Each source yields ``(series_id, message)`` pairs in the order they must be produced (the
order within one series is the sample order). Transport-free: the command sends them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.evaluation.data import load_series_csv, load_ucr, one_class_split, ucr_windows
from model.evaluation.synthetic import SyntheticConfig, generate

Message = tuple[str, dict[str, Any]]


def _value(row: np.ndarray) -> float | list[float]:
    return float(row[0]) if row.shape[0] == 1 else [float(v) for v in row]


def rows_as_windows(
    rows: Sequence[np.ndarray],
    *,
    n_series: int = 1,
    prefix: str = "ucr",
    start: float = 0.0,
    interval: float = 1.0,
) -> Iterator[Message]:
    """Row i goes to series ``i % n_series`` as its next window (one chunk message per row)."""
    cursor = [start] * n_series
    for i, row in enumerate(rows):
        k = i % n_series
        sid = f"{prefix}-{k}"
        values = np.asarray(row, dtype=np.float64)
        payload = [_value(v) for v in values.reshape(len(values), -1)]
        yield sid, {"series_id": sid, "start": cursor[k], "interval": interval, "values": payload}
        cursor[k] += len(values) * interval


def ucr_rows(test_path: Path, train_path: Path | None = None) -> list[np.ndarray]:
    """The rows of a UCR file, or with ``train_path`` the one-class protocol's test rows."""
    if train_path is not None:
        return one_class_split(train_path, test_path).test
    _, x = load_ucr(test_path)
    return ucr_windows(x)


def sample_messages(
    timestamps: np.ndarray, values: np.ndarray, series_id: str, *, start: float = 0.0
) -> Iterator[Message]:
    """A continuous series as single-sample messages, one per (timestamp + ``start``, value):
    how a sensor sends it, and how the worker must cut it into cycles itself."""
    times = (np.asarray(timestamps, dtype=np.float64) + start).tolist()
    rows = np.asarray(values, dtype=np.float64).reshape(len(times), -1)
    for t, row in zip(times, rows, strict=True):
        yield series_id, {"series_id": series_id, "timestamp": t, "value": _value(row)}


def message_time(message: dict[str, Any]) -> float:
    """The timestamp (seconds) of a message's first sample."""
    return float(message["timestamp"] if "timestamp" in message else message["start"])


def csv_messages(path: Path, series_id: str, chunk: int = 1) -> Iterator[Message]:
    """A CSV series as single-sample messages with its own timestamps (chunk=1), or as
    regular chunks of ``chunk`` samples using the median sampling interval."""
    series = load_series_csv(path)
    ts, values = series.timestamps, series.values.reshape(len(series.timestamps), -1)
    if chunk <= 1:
        yield from sample_messages(ts, values, series_id)
        return
    interval = float(np.median(np.diff(ts))) if len(ts) > 1 else 1.0
    for i in range(0, len(ts), chunk):
        part = values[i : i + chunk]
        yield (
            series_id,
            {
                "series_id": series_id,
                "start": float(ts[i]),
                "interval": interval,
                "values": [_value(r) for r in part],
            },
        )


def synthetic_messages(
    cfg: SyntheticConfig, *, start: float = 0.0, interval: float = 1.0, chunk: int = 64
) -> Iterator[Message]:
    """Synthetic series, interleaved chunk by chunk across series."""
    all_series = generate(cfg)
    longest = max(len(s.values) for s in all_series)
    for i in range(0, longest, chunk):
        for s in all_series:
            part = s.values[i : i + chunk]
            if len(part):
                yield (
                    s.series_id,
                    {
                        "series_id": s.series_id,
                        "start": start + i * interval,
                        "interval": interval,
                        "values": [_value(r) for r in part],
                    },
                )
