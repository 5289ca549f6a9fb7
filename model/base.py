"""What every detector shares: the :class:`Detector` protocol, the :class:`WindowScore` of one
window, and for the servable kinds calibration and the checkpoint hooks.

The protocol is kept deliberately tiny (after river): a detector learns from normal windows and
gives each window a score where higher means more anomalous. A window is a float array of
shape (L,) or (L, F); windows in one call may differ in L but not in F.

:class:`CalibratedDetector` holds a fitted detector's window geometry, its held-out normal
scores (the reference for :meth:`~CalibratedDetector.infer_threshold`), the quantiles of its
training scores (for percentiles) and the decision threshold, and declares the three hooks
:mod:`model.checkpoint` uses to save and load any detector kind the same way:

- ``checkpoint_config()``: the JSON config that rebuilds the networks;
- ``checkpoint_tensors()``: every tensor needed to score bit-identically;
- ``from_checkpoint(config, tensors, n_features=..., device=...)``: the inverse.

Scoring stays in each detector; thresholding stays here (after river and alibi-detect).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

import numpy as np
import torch

from model.errors import NotFittedError
from model.thresholds import EnergyQuantiles, Threshold, infer_threshold, require_threshold

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


@runtime_checkable
class Detector(Protocol):
    """Learn normal behaviour from windows, then score windows (higher = more anomalous)."""

    #: short name used on the command line and in checkpoint metadata, e.g. "seq2gmm", "knn"
    kind: str

    def fit(self, windows: Sequence[np.ndarray], *, seed: int = 0, progress: bool = False) -> Self:
        """Train on (assumed normal) windows. Deterministic for a given seed on one device."""
        ...

    def score(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) float64 window scores; raises NotFittedError before fit/load."""
        ...


@dataclass
class WindowScore:
    """Scoring result of one window."""

    score: float  # the window score (higher = more anomalous)
    segment_energies: np.ndarray  # (K,) float64 energies used for the score (calibrated if on)
    raw_energies: np.ndarray  # (K,) float64 mixture energies before calibration
    intervals: list[tuple[int, int]]  # (start, end) sample interval of each segment, inclusive
    top_segment: int  # index of the segment with the highest energy (localisation)
    percentile: float | None = None  # of the score among training window scores, in [0, 100]
    is_anomaly: bool | None = None  # score > threshold, when the model has a threshold

    @property
    def top_interval(self) -> tuple[int, int]:
        """Sample interval [start, end] (inclusive) of the most anomalous segment."""
        return self.intervals[self.top_segment]

    def to_dict(self) -> dict[str, object]:
        return {
            "score": self.score,
            "segment_energies": self.segment_energies.tolist(),
            "raw_energies": self.raw_energies.tolist(),
            "intervals": [list(iv) for iv in self.intervals],
            "top_segment": self.top_segment,
            "top_interval": list(self.top_interval),
            "percentile": self.percentile,
            "is_anomaly": self.is_anomaly,
        }


class CalibratedDetector:
    """Base class of the detectors that can be checkpointed, published and served."""

    kind: str = ""  # set by each subclass

    def __init__(self, *, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.n_features: int | None = None
        self.window_length: int | None = None  # common length of the training windows, if any
        self.hop: int | None = None  # set by the caller for sliding windows (None: UCR rows)
        self.seed: int | None = None
        self.reference_scores: np.ndarray | None = None  # held-out (or training) window scores
        self.quantiles: EnergyQuantiles | None = None  # of training window scores
        self._threshold: Threshold | None = None
        self.history: list[dict[str, float]] = []
        self.metrics: dict[str, Any] = {}
        self.training_summary: dict[str, Any] = {}

    # ------------------------------------------------------------------ state
    @property
    def is_fitted(self) -> bool:
        raise NotImplementedError

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"this {type(self).__name__} is not trained: call fit(windows) or load a"
                " checkpoint (model.checkpoint.load_checkpoint) first"
            )

    def score(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def to(self, device: str | torch.device) -> Self:
        raise NotImplementedError

    # ------------------------------------------------------------------ calibration
    @property
    def threshold(self) -> Threshold:
        """The decision threshold (score > value is anomalous); ThresholdNotSetError if none."""
        return require_threshold(self._threshold)

    @threshold.setter
    def threshold(self, value: Threshold | None) -> None:
        self._threshold = value

    @property
    def has_threshold(self) -> bool:
        return self._threshold is not None

    def calibrate(self, train_scores: np.ndarray, reference_scores: np.ndarray) -> None:
        """Record training-score quantiles and the normal reference scores; drop the threshold."""
        self.quantiles = EnergyQuantiles.from_scores(np.asarray(train_scores, dtype=np.float64))
        self.reference_scores = np.asarray(reference_scores, dtype=np.float64).copy()
        self._threshold = None

    def infer_threshold(
        self, *, fpr: float | None = None, quantile: float | None = None
    ) -> Threshold:
        """Set (and return) the threshold from the held-out normal window scores."""
        self._require_fitted()
        if self.reference_scores is None:
            raise NotFittedError("no reference scores: fit the detector or load a full checkpoint")
        self._threshold = infer_threshold(self.reference_scores, fpr=fpr, quantile=quantile)
        return self._threshold

    def percentile(self, energy: float | np.ndarray) -> float | np.ndarray:
        """Percentile(s) in [0, 100] of window score(s) among the training window scores."""
        self._require_fitted()
        if self.quantiles is None:
            raise NotFittedError("no training score quantiles: fit the detector first")
        if np.ndim(energy) == 0:
            return self.quantiles.percentile(float(energy))
        return self.quantiles.percentiles(np.asarray(energy, dtype=np.float64))

    def predict(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) bool: score > threshold. ThresholdNotSetError without a threshold."""
        thr = self.threshold
        return self.score(windows) > thr.value

    def score_detailed(self, windows: Sequence[np.ndarray]) -> list[WindowScore]:
        """Per-window results; a detector without segments reports the whole window as one."""
        scores = self.score(windows)
        return self.describe(scores, [(0, int(np.shape(w)[0]) - 1) for w in windows])

    def describe(self, scores: np.ndarray, intervals: list[tuple[int, int]]) -> list[WindowScore]:
        """One single-interval :class:`WindowScore` per window, with percentile and decision."""
        pct = self.quantiles.percentiles(scores) if self.quantiles is not None else None
        out = []
        for i, (s, iv) in enumerate(zip(scores, intervals, strict=True)):
            e = np.array([float(s)])
            out.append(
                WindowScore(
                    score=float(s),
                    segment_energies=e,
                    raw_energies=e.copy(),
                    intervals=[iv],
                    top_segment=0,
                    percentile=float(pct[i]) if pct is not None else None,
                    is_anomaly=bool(s > self._threshold.value) if self._threshold else None,
                )
            )
        return out

    # ------------------------------------------------------------------ checkpoint hooks
    def checkpoint_config(self) -> dict[str, Any]:
        """JSON-safe config that, with ``n_features``, rebuilds the networks."""
        raise NotImplementedError

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor needed to score bit-identically (CPU, contiguous)."""
        raise NotImplementedError

    def checkpoint_metadata(self) -> dict[str, Any]:
        """Extra kind-specific metadata for humans and tools (not needed to load)."""
        return {}

    @classmethod
    def from_checkpoint(
        cls,
        config: Mapping[str, Any],
        tensors: Mapping[str, torch.Tensor],
        *,
        n_features: int,
        device: str | torch.device = "cpu",
    ) -> Self:
        """A fitted detector from :meth:`checkpoint_config` and :meth:`checkpoint_tensors`."""
        raise NotImplementedError

    def _restore_network(
        self, prefix: str, net: ModuleT, tensors: Mapping[str, torch.Tensor], n_features: int
    ) -> ModuleT:
        """``net`` with the checkpoint's weights under ``prefix``, on this detector's device, in
        eval mode (for ``from_checkpoint``); records ``n_features``."""
        load_module_tensors(prefix, net, tensors)
        self.n_features = n_features
        return net.to(self.device).eval()


def module_tensors(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict as CPU tensors under ``prefix`` (for ``checkpoint_tensors``)."""
    return {
        prefix + k: v.detach().to("cpu").contiguous().clone()
        for k, v in module.state_dict().items()
    }


def load_module_tensors(
    prefix: str, module: torch.nn.Module, tensors: Mapping[str, torch.Tensor]
) -> None:
    """Load the tensors under ``prefix`` into ``module`` strictly (for ``from_checkpoint``)."""
    from model.errors import CheckpointError

    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"weights do not fit the model described by the metadata: {exc}"
        ) from exc
