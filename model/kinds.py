"""The detector kinds: one name per detector, used on the command line and in checkpoints.

Classes are imported on first use, so listing the kinds costs nothing and an optional
dependency of one kind (scikit-learn for the classic baselines) never breaks another.
"""

from __future__ import annotations

import importlib
from typing import Any

from model.errors import Seq2GMMError

#: kinds that can be checkpointed, published to the registry and served by the worker
SERVABLE: dict[str, str] = {
    "seq2gmm": "model.detectors.seq2gmm.detector:Seq2GMMDetector",
    "dagmm": "model.detectors.dagmm:TSDAGMMDetector",
    "vae-lstm": "model.detectors.vae_lstm:VAELSTMDetector",
    "classifier": "model.detectors.classifier:WindowClassifierDetector",
}
#: evaluation-only baselines (no checkpoint format)
BASELINES: dict[str, str] = {
    "iforest": "model.detectors.baselines:IsolationForestDetector",
    "ocsvm": "model.detectors.baselines:OneClassSVMDetector",
    "knn": "model.detectors.baselines:KNNDetector",
    "lstm-ae": "model.detectors.baselines:LSTMAutoencoderDetector",
}
SERVABLE_KINDS: tuple[str, ...] = tuple(SERVABLE)
KINDS: tuple[str, ...] = (*SERVABLE, *BASELINES)
#: kinds trained from labelled windows: ``fit(windows, labels=...)``
SUPERVISED_KINDS: tuple[str, ...] = ("classifier",)


def detector_class(kind: str) -> Any:
    """The class implementing ``kind``; a :class:`Seq2GMMError` naming the valid kinds if none."""
    target = SERVABLE.get(kind) or BASELINES.get(kind)
    if target is None:
        raise Seq2GMMError(f"unknown detector kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)
