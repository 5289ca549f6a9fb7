"""Read a scored window's samples back from ``ts.raw``, by the source offsets of its record.

Every ``ts.anomalies`` record names the partition and the offset range its window's samples
came from (``source``) and the window's first and last timestamps. Reading that range again,
keeping the record's series and the samples in its time span, and dropping repeated or earlier
timestamps exactly as the windower does, gives the samples that were scored, as long as the
topic still retains those offsets.
"""

from __future__ import annotations

import time

import numpy as np
from kafka import TopicPartition

from worker.errors import MessageError, ServiceError
from worker.ops.settings import KafkaSettings
from worker.stream.kafka_clients import make_consumer
from worker.stream.messages import AnomalyRecord, decode_raw


class ReadbackError(ServiceError):
    """The window's samples cannot be read back from ts.raw."""


def window_samples(
    record: AnomalyRecord,
    bootstrap: str,
    kafka: KafkaSettings,
    *,
    timeout_s: float = 30.0,
) -> np.ndarray:
    """(n_samples, F) float64 samples of ``record``'s window, re-read from its source offsets."""
    src = record.source
    if src is None:
        raise ReadbackError(
            "the record names no source offsets; plot the window from its dataset instead"
        )
    tp = TopicPartition(src.topic, src.partition)
    consumer = make_consumer(bootstrap, kafka, group_id=None, enable_auto_commit=False)
    try:
        consumer.assign([tp])
        first_kept = consumer.beginning_offsets([tp])[tp]
        if first_kept > src.first_offset:
            raise ReadbackError(
                f"{src.topic}[{src.partition}] no longer holds offset {src.first_offset} (the"
                f" oldest retained is {first_kept}); run the worker with"
                " SEQ2GMM_WORKER__INCLUDE_SAMPLES=true to keep samples in the records"
            )
        consumer.seek(tp, src.first_offset)
        times: list[float] = []
        rows: list[np.ndarray] = []
        deadline = time.monotonic() + timeout_s
        done = False
        while not done:
            if time.monotonic() > deadline:
                raise ReadbackError(
                    f"timed out reading {src.topic}[{src.partition}] offsets"
                    f" {src.first_offset}..{src.last_offset} within {timeout_s:.0f} s"
                )
            for msg in consumer.poll(timeout_ms=500).get(tp, []):
                if msg.offset > src.last_offset:
                    done = True
                    break
                _keep(record, msg.value, msg.key, times, rows)
                done = msg.offset >= src.last_offset
                if done:
                    break
    finally:
        consumer.close()
    if len(rows) != record.window.n_samples:
        raise ReadbackError(
            f"read {len(rows)} samples of {record.series_id} in the window's time span, the"
            f" record says {record.window.n_samples}; the offsets may have been compacted or"
            " rewritten"
        )
    return np.stack(rows)


def _keep(
    record: AnomalyRecord,
    value: bytes | None,
    key: bytes | None,
    times: list[float],
    rows: list[np.ndarray],
) -> None:
    """Append the message's samples of the record's series inside its window span."""
    try:
        msg = decode_raw(value, key)
    except MessageError:
        return  # the worker dead-lettered it; it never entered a window
    if msg.series_id != record.series_id:
        return
    ts, values = msg.samples()
    for t, row in zip(ts.tolist(), values, strict=True):
        if not record.window.start <= t <= record.window.end:
            continue
        if times and t <= times[-1]:
            continue  # a repeated or earlier timestamp, dropped by the windower too
        times.append(t)
        rows.append(row)
