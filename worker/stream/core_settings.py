"""The streaming core's options from the settings (topics, batching, incidents, where batches
are scored)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from worker.ops.settings import ScoringMode, Settings
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


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a
    container's CPU limit, rounded up) when one is set."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus or 1, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus or 1


def scoring_mode(scoring: ScoringMode, *, routed: bool, device: str, cpus: int) -> ScoringMode:
    """``SEQ2GMM_BATCHING__SCORING`` with ``auto`` resolved: ``process`` for a one-model worker
    on CPU with at least two usable cores (more windows/s and a higher one-sample ratio in
    every measured run; docs/benchmarks.md, "Scoring in a process"), else ``thread``: a routed
    worker scores in-process, a one-core worker gains nothing from a second process and pays
    its ~350 MB, and process scoring on CUDA was not measured. Explicit values are kept."""
    if scoring != "auto":
        return scoring
    return "process" if not routed and device == "cpu" and cpus >= 2 else "thread"
