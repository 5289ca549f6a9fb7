"""The detector kinds: one name per detector, used on the command line and in checkpoints.

Classes are imported on first use, so listing the kinds costs nothing and an optional
dependency of one kind (scikit-learn for the classic baselines) never breaks another. What a
kind is (servable, supervised, how its config is read) is declared by its class.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from model.errors import Seq2GMMError

if TYPE_CHECKING:
    from model.base import Detector

#: kinds that can be checkpointed, published to the registry and served by the worker
SERVABLE: dict[str, str] = {
    "seq2gmm": "model.detectors.seq2gmm.detector:Seq2GMMDetector",
    "dagmm": "model.detectors.dagmm.detector:TSDAGMMDetector",
    "vae-lstm": "model.detectors.vae_lstm.detector:VAELSTMDetector",
    "classifier": "model.detectors.classifier.detector:WindowClassifierDetector",
    "knn": "model.detectors.nearest.detector:NearestCycleDetector",
}
#: evaluation-only baselines (no checkpoint format)
BASELINES: dict[str, str] = {
    "iforest": "model.detectors.baselines:IsolationForestDetector",
    "ocsvm": "model.detectors.baselines:OneClassSVMDetector",
    "lstm-ae": "model.detectors.baselines:LSTMAutoencoderDetector",
}
SERVABLE_KINDS: tuple[str, ...] = tuple(SERVABLE)
KINDS: tuple[str, ...] = (*SERVABLE, *BASELINES)


def detector_class(kind: str) -> Any:
    """The class implementing ``kind``; a :class:`Seq2GMMError` naming the valid kinds if none."""
    target = SERVABLE.get(kind) or BASELINES.get(kind)
    if target is None:
        raise Seq2GMMError(f"unknown detector kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def is_supervised(kind: str) -> bool:
    """Whether ``kind`` trains from labelled windows (``fit(windows, labels=...)``), as its
    class declares."""
    return bool(detector_class(kind).supervised)


def make_detector(kind: str, *, seed: int = 0, config: Any = None) -> Detector:
    """A new, unfitted detector of ``kind`` (see :data:`KINDS`).

    ``config``: for a servable kind whatever its class's ``read_config`` takes (None for the
    default, its config object, a dict, "default" or a JSON file path; seq2gmm also its
    config names such as "faithful"; knn e.g. ``{"metric": "dtw"}``); for a baseline, a mapping
    of its constructor arguments (e.g. ``{"n_estimators": 200}``). ``seed`` is accepted for
    symmetry with the CLI: every kind is built deterministically and seeded by
    ``fit(windows, seed=...)``.
    """
    del seed  # construction draws no random numbers; training is seeded in fit
    cls = detector_class(kind)
    if kind in SERVABLE:
        return cls.from_config(config)
    if config is None:
        return cls()
    if not isinstance(config, Mapping):
        raise Seq2GMMError(
            f"the config of a {kind!r} detector must be a mapping of constructor arguments,"
            f" got {type(config).__name__}"
        )
    try:
        return cls(**dict(config))
    except TypeError as exc:
        raise Seq2GMMError(f"bad config for the {kind!r} detector: {exc}") from None
