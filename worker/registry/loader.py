"""From a verified registry version to the model the stream serves.

:func:`load_detector` is the only place that deserialises weights from the registry (through
:mod:`model.checkpoint`: the sha256 again, then safetensors, never pickle);
:class:`DetectorModel` adapts the detector to the core's
:class:`~worker.stream.served.ServedModel`; :class:`RegistryModels` is the stream's model
source: the registry's active version, hot-reloaded in the background by an
:class:`~worker.registry.watcher.ActiveModelWatcher` (the serving loop never waits on Redis).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import structlog
import torch

from model.checkpoint import checkpoint_from_bytes
from model.cycles import Cutter, model_cutter
from model.errors import Seq2GMMError
from model.thresholds import expected_alarm_rate
from worker.errors import ConfigError
from worker.registry.errors import ModelLoadError
from worker.registry.records import ModelVersion
from worker.stream.served import ScoredWindow, SegmentScore, ServedModel

log = structlog.get_logger()

# Synthetic cycles a serving model scores once when it is loaded. A scoring process's first
# batch of 100 windows (L = 82) took 146 ms cold against 57 ms warm; a warm-up of 8 windows
# (61 ms, with the version's load) took it to 78 ms, of 256 (235 ms) to 56 ms: 8 is most of
# the gain for a quarter of the child's time at each swap.
WARM_UP_WINDOWS = 8


def load_detector(record: ModelVersion) -> Any:
    """Turn a verified registry version into a detector via :mod:`model.checkpoint`.

    The only function of this module that deserialises weights; ``checkpoint_from_bytes``
    checks the sha256 again and reads safetensors (never pickle).
    """
    try:
        return checkpoint_from_bytes(dict(record.metadata), record.weights)
    except Seq2GMMError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load {record.ref} ({type(exc).__name__}: {exc}); the checkpoint may come"
            " from an incompatible version of seq2gmm-worker: publish it again with this one"
        ) from exc


def pick_device(setting: str) -> torch.device:
    """``auto`` = CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if setting == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if setting == "cuda":
        raise ConfigError("SEQ2GMM_DEVICE=cuda but no CUDA device is available; use auto or cpu")
    return torch.device("cpu")


class RegistryModels:
    """The stream's :class:`~worker.stream.kafka_loop.ModelSource`: the registry's active
    version of one model, loaded onto ``device`` and hot-reloaded by an ActiveModelWatcher.

    The watcher checks Redis in its background thread (started here if the caller did not);
    :meth:`current` and :meth:`poll` only read its latest result: no Redis call, no load and no
    lock held across I/O on the serving loop's path. Call them from one thread (the loop).
    """

    def __init__(self, watcher: Any, device: torch.device) -> None:
        self.watcher = watcher
        self.device = device
        self._handed_out: Any = None  # the watcher's LoadedVersion the loop last received

    @staticmethod
    def loader(device: torch.device, warm: bool = False) -> Any:
        """``load(record) -> DetectorModel``; ``warm``: for a model about to serve a stream,
        score a few synthetic cycles once (:func:`warm_up`) as part of the load."""

        def load(record: Any) -> DetectorModel:
            detector = load_detector(record)
            model = DetectorModel(
                record.name, record.version, detector, dict(record.metadata), device
            )
            if warm:
                warm_up(model)
            return model

        return load

    def current(self) -> ServedModel | None:
        self.watcher.start()
        loaded = self.watcher.current()
        self._handed_out = loaded
        return loaded.model if loaded is not None else None

    def poll(self) -> ServedModel | None:
        """The model the watcher swapped in since the loop last asked, else None."""
        loaded = self.watcher.current()
        if loaded is None or loaded is self._handed_out:
            return None
        self._handed_out = loaded
        return loaded.model


def warm_up_windows(length: int, n_features: int, n: int = WARM_UP_WINDOWS) -> list[np.ndarray]:
    """``n`` smooth cycles of ``length`` samples (``(length,)`` or ``(length, F)``), seeded."""
    rng = np.random.default_rng(0)
    t = np.linspace(0.0, 2.0 * np.pi, max(length, 2))
    out = []
    for _ in range(n):
        cycle = np.sin(t + rng.uniform(0, 0.5)) + 0.05 * rng.standard_normal(t.size)
        out.append(cycle if n_features == 1 else np.repeat(cycle[:, None], n_features, axis=1))
    return out


def warm_up(model: ServedModel, n: int = WARM_UP_WINDOWS) -> float | None:
    """Score ``n`` synthetic cycles of the model's longest window once and drop the scores,
    so the stream's first batch does not pay for the first call (lazy imports, first
    allocations; in a scoring process also the version's transfer and load). Returns the
    seconds it took, or None when the model refused them (logged; the stream's own windows
    decide then, as without a warm-up)."""
    windows = warm_up_windows(model.cutter.max_length, model.n_features, n)
    started = time.perf_counter()
    try:
        model.score(windows)
    except Seq2GMMError as exc:
        log.warning("model_warm_up_failed", model=model.name, version=model.version, error=str(exc))
        return None
    return time.perf_counter() - started


def served_cutter(name: str, version: int, detector: Any, metadata: dict[str, Any]) -> Cutter:
    """How the stream cuts series for this model: its ``cycles`` metadata, else (checkpoints
    from before cycles, models trained on ready-made windows) fixed windows of
    ``window_length`` every ``hop`` samples."""
    cycles = metadata.get("cycles")
    length = metadata.get("window_length") or getattr(detector, "window_length", None)
    if cycles is None and not length:
        raise ModelLoadError(
            f"model {name} v{version} has neither cycles nor window_length in its metadata;"
            " retrain it with `seq2gmm train` and publish it again"
        )
    return model_cutter(cycles, int(length or 0), metadata.get("hop"))


class DetectorModel:
    """A :class:`ServedModel` over a checkpoint-loaded detector with ``score_detailed``."""

    def __init__(
        self, name: str, version: int, detector: Any, metadata: dict[str, Any], device: torch.device
    ) -> None:
        self.name = name
        self.version = version
        self.detector = detector.to(device) if hasattr(detector, "to") else detector
        self.device = device
        self.cutter: Cutter = served_cutter(name, version, detector, metadata)
        self.n_features = int(metadata.get("n_features") or getattr(detector, "n_features", 0) or 1)
        self.threshold = float(detector.threshold.value)
        # the share of normal windows it flags by design (None: unknown), for the metrics
        self.expected_anomaly_rate = expected_alarm_rate(
            detector.threshold, getattr(detector, "quantiles", None)
        )

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
