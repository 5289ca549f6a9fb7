"""What goes into a streaming core and what comes out: input records, output records, and the
dead letters of records and windows that could not be scored (with the reason in a header)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import structlog

from worker.stream.windowing import Window

log = structlog.get_logger()

ERROR_HEADER = "seq2gmm.error"


@dataclass(frozen=True)
class InRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    ready_at: float | None = None  # when its window was complete (for end-to-end latency)
    partition: int | None = None  # the input partition of the window it stands for
    to_partition: int | None = None  # publish to this partition (None: by the key's hash)


def dead_letter(topic: str, rec: InRecord, reason: str) -> OutRecord:
    """The record ``rec`` as it goes to the dead-letter ``topic``: its key and value unchanged,
    the reason and its source position in headers."""
    log.warning("dead_letter", partition=rec.partition, offset=rec.offset, reason=reason[:200])
    return OutRecord(
        topic=topic,
        key=rec.key,
        value=rec.value or b"",
        headers=[
            (ERROR_HEADER, reason.encode()[:4096]),
            ("seq2gmm.source.topic", rec.topic.encode()),
            ("seq2gmm.source.partition", str(rec.partition).encode()),
            ("seq2gmm.source.offset", str(rec.offset).encode()),
        ],
    )


def failed_window(topic: str, w: Window, reason: str) -> OutRecord:
    """A window the model could not score, as a chunk message on the dead-letter ``topic``
    (it can be produced to ts.raw again as it is)."""
    log.error("window_scoring_failed", series_id=w.series_id, reason=reason[:200])
    body = {
        "series_id": w.series_id,
        "start": float(w.timestamps[0]),
        "interval": float(np.median(np.diff(w.timestamps))) if len(w.timestamps) > 1 else 1.0,
        "values": w.values.tolist(),
    }
    return OutRecord(
        topic,
        w.series_id.encode(),
        json.dumps(body).encode(),
        [(ERROR_HEADER, reason.encode()[:4096])],
        partition=w.partition,
    )
