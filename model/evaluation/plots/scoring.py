"""What the figures ask of a detector: scores of many windows (with progress), the details and
reconstruction of a few, its threshold. Any detector works; what it cannot offer is left out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np

from model.base import WindowScore

SCORE_CHUNK = 256  # windows per score call when scoring many windows


class _Bar(Protocol):
    def update(self, n: int = 1) -> None: ...


#: ``progress(total, label)`` -> a context manager whose ``update(n)`` counts done items
ProgressFactory = Callable[[int, str], AbstractContextManager[_Bar]]


class _NoProgress:
    def __init__(self, total: int, label: str) -> None:
        del total, label

    def update(self, n: int = 1) -> None:
        del n

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def score_in_chunks(
    detector: Any,
    windows: Sequence[np.ndarray],
    *,
    detailed: bool = False,
    label: str = "score",
    chunk: int = SCORE_CHUNK,
    progress: ProgressFactory | None = None,
) -> Any:
    """``detector.score`` (or ``score_detailed``) of many windows, a chunk at a time, reporting
    to ``progress(total, label)`` (e.g. the CLI's terminal bar) when given. Returns an (N,)
    array, or a list of WindowScore."""
    wins = list(windows)
    scores: list[float] = []
    details: list[WindowScore] = []
    with (progress or _NoProgress)(len(wins), label) as bar:
        for i in range(0, len(wins), chunk):
            part = wins[i : i + chunk]
            if detailed:
                details += detector.score_detailed(part)
            else:
                scores += np.asarray(detector.score(part), dtype=np.float64).tolist()
            bar.update(len(part))
    return details if detailed else np.asarray(scores, dtype=np.float64)


def detector_threshold(detector: Any) -> float | None:
    """The detector's threshold value, or None when it has none (or no such notion)."""
    if detector is None or not getattr(detector, "has_threshold", False):
        return None
    return float(detector.threshold.value)


def detail_windows(
    detector: Any, windows: Sequence[np.ndarray], indices: Sequence[int]
) -> dict[int, WindowScore]:
    """``{index: WindowScore}`` of the chosen windows, when the detector can explain scores."""
    score_detailed = getattr(detector, "score_detailed", None)
    idx = sorted(set(indices))
    if score_detailed is None or not idx:
        return {}
    return dict(zip(idx, score_detailed([windows[i] for i in idx]), strict=True))


def reconstruction_of(detector: Any, window: np.ndarray) -> np.ndarray | None:
    """The detector's reconstruction (L, F) of one window, when it offers ``reconstruct``."""
    reconstruct = getattr(detector, "reconstruct", None)
    if reconstruct is None:
        return None
    out = reconstruct([window])
    return np.asarray(out[0], dtype=np.float64) if len(out) else None
