"""The message schema of ``ts.incidents`` (key = series id): one :class:`IncidentRecord` per
lifecycle event of an incident (``open``, rate-limited ``update``, ``resolved``), built by
:class:`~worker.stream.incidents.IncidentTracker`.

Each record carries the incident's whole summary so far, so a consumer needs only the latest
record of an incident id, and the worker restores its state from it after a restart. Kept apart
from :mod:`worker.stream.messages` (which exports its JSON Schema with the others) so that
module stays one screenful of schemas; it depends on pydantic only.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IncidentModel(_Strict):
    name: str
    version: int = Field(ge=1, description="the version that scored the incident's last window")


class IncidentWindow(_Strict):
    start: float = Field(description="timestamp of the window's first sample (Unix seconds)")
    end: float = Field(description="timestamp of the window's last sample (Unix seconds)")


class IncidentSegment(_Strict):
    start: float = Field(description="timestamp of the segment's first sample")
    end: float = Field(description="timestamp of the segment's last sample")
    energy: float


class IncidentSource(_Strict):
    topic: str
    partition: int = Field(ge=0, description="input partition of the series' windows")


class IncidentRecord(_Strict):
    """One lifecycle event of an incident: anomalous windows of one series, close together."""

    schema_version: Literal[1] = 1
    id: str = Field(description="deterministic: series, model name and first anomalous window")
    state: Literal["open", "update", "resolved"]
    series_id: str = Field(min_length=1, max_length=256)
    model: IncidentModel
    first_window: IncidentWindow = Field(description="its first anomalous window")
    last_window: IncidentWindow = Field(description="its latest anomalous window")
    window_count: int = Field(ge=1, description="windows from the first to the last anomalous")
    anomalous_count: int = Field(ge=1, description="anomalous windows among them")
    peak_energy: float
    peak_score: float | None = Field(
        description="energy / threshold of the peak window (> 1 = anomalous); see README"
    )
    peak_window_start: float
    threshold: float = Field(description="threshold of the latest anomalous window")
    worst_segments: list[IncidentSegment] = Field(
        description="the most energetic anomalous segments so far, highest first"
    )
    first_window_ids: list[str] = Field(
        description="ts.anomalies record ids of its first anomalous windows (up to 8)"
    )
    last_window_ids: list[str] = Field(
        description="... and of its latest ones after those (up to 8; the middle ones of a long"
        " incident are left out: anomalous_count says how many there are)"
    )
    opened_at: float = Field(description="stream time: end of the window that opened it")
    updated_at: float = Field(description="stream time of this record (a window end)")
    resolution: Literal["normal_windows", "idle_timeout"] | None = Field(
        default=None, description="why it was resolved (resolved records only)"
    )
    source: IncidentSource

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def incident_id(series_id: str, model_name: str, first_window_start: float) -> str:
    """Deterministic incident id (as :func:`~worker.stream.messages.record_id` for windows), so a
    replay of the same stream names the same incidents."""
    raw = f"incident\x1f{series_id}\x1f{model_name}\x1f{first_window_start!r}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()
