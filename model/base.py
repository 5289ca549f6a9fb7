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
- ``restore(tensors, n_features)``: the inverse, called by ``from_checkpoint(config, tensors,
  n_features=..., device=...)`` on a detector built from the config.

Scoring stays in each detector; thresholding stays here (after river and alibi-detect).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, Self, TypeVar, runtime_checkable

import numpy as np
import torch

from model.errors import NotFittedError, Seq2GMMError
from model.thresholds import EnergyQuantiles, Threshold, infer_threshold, require_threshold

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)
NetT = TypeVar("NetT", bound=torch.nn.Module)  # a kind's network


@runtime_checkable
class Detector(Protocol):
    """Learn normal behaviour from windows, then score windows (higher = more anomalous)."""

    #: short name used on the command line and in checkpoint metadata, e.g. "seq2gmm", "knn"
    kind: str
    #: True for a kind trained from labelled windows: ``fit(windows, labels=...)``
    supervised: bool

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
    # (K,) float64 per-segment scores on the window score's scale: the energies used for the
    # score (calibrated if on; with whole-cycle evidence, each combined with it)
    segment_energies: np.ndarray
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


class CalibratedDetector(Generic[NetT]):
    """Base class of the detectors that can be checkpointed, published and served; ``model``
    is the kind's network (a ``NetT``), None until fit or load."""

    kind: str = ""  # set by each subclass
    supervised: bool = False  # True: fit(windows, labels=...) learns from labelled windows
    config_class: type = object  # the frozen dataclass of the subclass's settings

    def __init__(self, *, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model: NetT | None = None
        self.n_features: int | None = None
        self.window_length: int | None = None  # common length of the training windows, if any
        self.hop: int | None = None  # set by the caller for sliding windows (None: UCR rows)
        # how series are cut into this model's windows (model.cycles config); None: fixed windows
        # of window_length every hop samples
        self.cycles: dict[str, Any] | None = None
        self.seed: int | None = None
        self.reference_scores: np.ndarray | None = None  # held-out (or training) window scores
        self.quantiles: EnergyQuantiles | None = None  # of training window scores
        self._threshold: Threshold | None = None
        self.history: list[dict[str, float]] = []
        self.metrics: dict[str, Any] = {}
        self.training_summary: dict[str, Any] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: Any = None, *, device: str | torch.device = "cpu") -> Self:
        """A new, unfitted detector; ``config`` as :meth:`read_config` takes it."""
        build: Any = cls  # every subclass takes (config, *, device)
        return build(cls.read_config(config), device=device)

    @classmethod
    def read_config(cls, config: Any) -> Any:
        """``config`` as an instance of :attr:`config_class` (None: the default config).

        Takes None, a config instance, a dict for its ``from_dict``, ``"default"`` or the
        path of a JSON file holding that dict. Seq2GMM also takes its named configs.
        """
        if config is None or isinstance(config, cls.config_class):
            return config
        if isinstance(config, str | Path):
            if config == "default":
                return None
            config = _read_json_config(cls.kind, Path(config))
        if not isinstance(config, Mapping):
            raise Seq2GMMError(
                f"the {cls.kind} config must be a {cls.config_class.__name__}, a dict or a JSON"
                f" file path; got {type(config).__name__}"
            )
        return cls.config_class.from_dict(dict(config))  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ state
    @property
    def is_fitted(self) -> bool:
        return self.model is not None

    def _require_model(self) -> NetT:
        self._require_fitted()
        assert self.model is not None
        return self.model

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"this {type(self).__name__} is not trained: call fit(windows) or load a"
                " checkpoint (model.checkpoint.load_checkpoint) first"
            )

    def score(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def to(self, device: str | torch.device) -> Self:
        """Move the network to ``device`` (later scoring runs there)."""
        self.device = torch.device(device)
        if self.model is not None:
            self.model.to(self.device)
        return self

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

    def predict(self, windows: Sequence[np.ndarray], **score_options: Any) -> np.ndarray:
        """(N,) bool: score > threshold. ThresholdNotSetError without a threshold.

        ``score_options`` go to :meth:`score` (e.g. Seq2GMM's precomputed ``segmentation``)."""
        thr = self.threshold
        return np.asarray(self.score(windows, **score_options) > thr.value)

    def score_detailed(self, windows: Sequence[np.ndarray]) -> list[WindowScore]:
        """Per-window results; a detector without segments reports the whole window as one."""
        scores = self.score(windows)
        return self.describe(scores, [(0, int(np.shape(w)[0]) - 1) for w in windows])

    def describe(self, scores: np.ndarray, intervals: list[tuple[int, int]]) -> list[WindowScore]:
        """One single-interval :class:`WindowScore` per window, with percentile and decision."""
        out = []
        for s, iv in zip(scores, intervals, strict=True):
            e = np.array([float(s)])
            out.append(WindowScore(float(s), e, e.copy(), [iv], top_segment=0))
        return self.decide(out, scores)

    def decide(self, results: list[WindowScore], scores: np.ndarray) -> list[WindowScore]:
        """``results`` with each window's percentile among the training scores and, with a
        threshold, its decision filled in (in place; returned for convenience)."""
        pct = self.quantiles.percentiles(scores) if self.quantiles is not None else None
        for i, r in enumerate(results):
            if pct is not None:
                r.percentile = float(pct[i])
            if self._threshold is not None:
                r.is_anomaly = bool(scores[i] > self._threshold.value)
        return results

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
        cfg = cls.config_class.from_dict(dict(config))  # type: ignore[attr-defined]
        detector = cls.from_config(cfg, device=device)  # DataError above: wrapped by the caller
        detector.restore(tensors, n_features)
        return detector

    def restore(self, tensors: Mapping[str, torch.Tensor], n_features: int) -> None:
        """Load the networks (and any other fitted state) of a new detector from the tensors
        of a checkpoint (for :meth:`from_checkpoint`)."""
        raise NotImplementedError

    def _restore_network(
        self, prefix: str, net: ModuleT, tensors: Mapping[str, torch.Tensor], n_features: int
    ) -> ModuleT:
        """``net`` with the checkpoint's weights under ``prefix``, on this detector's device, in
        eval mode (for ``from_checkpoint``); records ``n_features``."""
        load_module_tensors(prefix, net, tensors)
        self.n_features = n_features
        return net.to(self.device).eval()


def _read_json_config(kind: str, path: Path) -> Any:
    """The JSON document of a config file; Seq2GMMError saying what is wrong otherwise."""
    if not path.is_file():
        raise Seq2GMMError(f"the {kind} config {str(path)!r} is neither 'default' nor a JSON file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Seq2GMMError(f"{path} is not valid JSON: {exc}") from None


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
