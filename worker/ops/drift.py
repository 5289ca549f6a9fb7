"""Live drift of the models a worker serves: a sliding time window of scored windows per model.

The Kafka loop feeds :meth:`DriftMonitor.observe` with every completed batch (on the loop's
thread, no I/O); ``/metrics`` reads :meth:`DriftMonitor.reports` at scrape time and exports
``seq2gmm_drift_statistic{model}`` (the PSI of :mod:`model.evaluation.drift`) and
``seq2gmm_window_anomaly_share{model}``. Each model keeps the windows scored in the last
``window_s`` seconds (at most ``max_windows`` of them: bounded memory whatever the rate); a new
version of a model starts a fresh window, its training quantiles being another reference.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from model.evaluation.drift import MIN_WINDOWS, DriftReport, drift_report


@dataclass
class _ModelWindow:
    version: int
    seen: deque[tuple[float, float, bool]] = field(default_factory=deque)  # (at, pct, anomalous)


class DriftMonitor:
    def __init__(
        self,
        window_s: float = 3600.0,
        max_windows: int = 20_000,
        min_windows: int = MIN_WINDOWS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.max_windows = max_windows
        self.min_windows = min_windows
        self._clock = clock
        self._models: dict[str, _ModelWindow] = {}
        self._lock = threading.Lock()  # observed by the loop, read by /metrics' thread

    def observe(
        self, name: str, version: int, percentiles: Sequence[float], anomalous: Sequence[bool]
    ) -> None:
        """Windows of one batch scored by ``name`` v``version`` (percentile NaN = unknown)."""
        now = self._clock()
        new = [(now, float(p), bool(a)) for p, a in zip(percentiles, anomalous, strict=True)]
        with self._lock:
            state = self._models.get(name)
            if state is None or state.version != version:
                state = self._models[name] = _ModelWindow(version)
            seen = state.seen
            seen.extend(new)
            while len(seen) > self.max_windows:
                seen.popleft()
            while seen and seen[0][0] < now - self.window_s:
                seen.popleft()

    def reports(self) -> dict[str, DriftReport]:
        """Per model name, the drift of its windows of the last ``window_s`` seconds."""
        now = self._clock()
        out: dict[str, DriftReport] = {}
        with self._lock:
            copies = {name: list(state.seen) for name, state in self._models.items()}
        for name, all_seen in copies.items():
            seen = [s for s in all_seen if s[0] >= now - self.window_s]
            pct = np.array([s[1] for s in seen], dtype=np.float64)
            flags = np.array([s[2] for s in seen], dtype=bool)
            out[name] = drift_report(pct, flags, self.min_windows)
        return out
