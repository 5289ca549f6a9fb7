"""The streaming core's options from the settings (topics, batching, incidents)."""

from __future__ import annotations

from typing import Any

from worker.ops.settings import Settings
from worker.stream.core import CoreOptions
from worker.stream.incidents import IncidentConfig


def incident_options(settings: Settings) -> dict[str, Any]:
    """The CoreOptions of incident tracking from the settings ({} when disabled)."""
    i = settings.incidents
    if not i.enabled:
        return {}
    cfg = IncidentConfig(
        min_windows=i.min_windows,
        gap_tolerance=i.gap_tolerance,
        resolve_after=i.resolve_after,
        renotify_s=i.renotify_s,
        idle_timeout_s=i.idle_timeout_s,
        source_topic=settings.kafka.raw_topic,
    )
    return {"incidents": cfg, "incidents_topic": i.topic}


def core_options(settings: Settings, **overrides: Any) -> CoreOptions:
    k, b = settings.kafka, settings.batching
    opts: dict[str, Any] = {
        "raw_topic": k.raw_topic,
        "anomalies_topic": k.anomalies_topic,
        "dead_letter_topic": k.dead_letter_topic,
        "shadow_topic": k.shadow_topic,
        "max_windows": b.max_windows,
        "linger_s": b.linger_ms / 1000.0,
    }
    opts.update(overrides)
    return CoreOptions(**opts)
