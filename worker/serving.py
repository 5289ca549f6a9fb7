"""The model a worker serves: a loaded detector plus its registry identity and window geometry.

The streaming core only needs :class:`ServedModel`'s small surface (window geometry, a
threshold, and batch scoring with per-segment energies), so tests can serve a fake one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class SegmentScore:
    start_index: int  # first sample of the segment in its window (inclusive)
    end_index: int  # last sample (inclusive)
    energy: float


@dataclass(frozen=True)
class ScoredWindow:
    energy: float  # the window score
    percentile: float  # of the window score among the model's training scores, 0..100
    segments: tuple[SegmentScore, ...]


class ServedModel(Protocol):
    name: str
    version: int
    window_length: int
    hop: int
    n_features: int
    threshold: float

    def score(self, windows: Sequence[np.ndarray]) -> list[ScoredWindow]:
        """Score a microbatch of (L, F) windows in one call."""
        ...


def pick_device(setting: str) -> torch.device:
    """``auto`` = CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    from worker.errors import ConfigError

    if setting == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if setting == "cuda":
        raise ConfigError("SEQ2GMM_DEVICE=cuda but no CUDA device is available; use auto or cpu")
    return torch.device("cpu")


class RegistryModels:
    """The stream's :class:`~worker.stream.ModelSource`: the registry's active version of one
    model, loaded onto ``device`` and hot-reloaded through an ActiveModelWatcher."""

    def __init__(self, watcher: Any, device: torch.device) -> None:
        self.watcher = watcher
        self.device = device

    @staticmethod
    def loader(device: torch.device) -> Any:
        from worker.watcher import load_detector

        def load(record: Any) -> DetectorModel:
            detector = load_detector(record)
            return DetectorModel(
                record.name, record.version, detector, dict(record.metadata), device
            )

        return load

    def current(self) -> ServedModel | None:
        if self.watcher.current() is None:
            self.watcher.check(force=True)
        loaded = self.watcher.current()
        return loaded.model if loaded is not None else None

    def poll(self) -> ServedModel | None:
        result = self.watcher.check()
        if not result.changed:
            return None
        loaded = self.watcher.current()
        return loaded.model if loaded is not None else None


class DetectorModel:
    """A :class:`ServedModel` over a checkpoint-loaded detector with ``score_detailed``."""

    def __init__(
        self, name: str, version: int, detector: Any, metadata: dict[str, Any], device: torch.device
    ) -> None:
        self.name = name
        self.version = version
        self.detector = detector.to(device) if hasattr(detector, "to") else detector
        self.device = device
        length = metadata.get("window_length") or getattr(detector, "window_length", None)
        if not length:
            raise ValueError(f"model {name} v{version} has no window_length in its metadata")
        self.window_length = int(length)
        self.hop = int(metadata.get("hop") or self.window_length)
        self.n_features = int(metadata.get("n_features") or getattr(detector, "n_features", 0) or 1)
        self.threshold = float(detector.threshold.value)

    def score(self, windows: Sequence[np.ndarray]) -> list[ScoredWindow]:
        results = self.detector.score_detailed(list(windows))
        out = []
        for r in results:
            segs = tuple(
                SegmentScore(int(s), int(e), float(en))
                for (s, e), en in zip(r.intervals, r.segment_energies, strict=True)
            )
            pct = r.percentile if r.percentile is not None else float("nan")
            out.append(ScoredWindow(energy=float(r.score), percentile=float(pct), segments=segs))
        return out
