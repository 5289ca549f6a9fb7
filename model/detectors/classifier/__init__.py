"""A supervised window classifier (kind ``classifier``), read in this order:

- :mod:`~model.detectors.classifier.config`: :class:`ClassifierConfig`, every setting;
- :mod:`~model.detectors.classifier.data`: labelled windows, robust scaling, model inputs;
- :mod:`~model.detectors.classifier.network`: the (Bi)LSTM / FCN networks;
- :mod:`~model.detectors.classifier.validation`: the held-out split and the F1 threshold;
- :mod:`~model.detectors.classifier.detector`: :class:`WindowClassifierDetector`, with the
  reference it follows and where it deviates.
"""

from model.detectors.classifier.config import ClassifierConfig
from model.detectors.classifier.data import (
    LabelledWindows,
    labelled_windows,
    robust_scaler,
    window_targets,
)
from model.detectors.classifier.detector import WindowClassifierDetector
from model.detectors.classifier.network import WindowClassifier
from model.detectors.classifier.validation import WindowSplit, f1_threshold, split_windows

__all__ = [
    "ClassifierConfig",
    "LabelledWindows",
    "WindowClassifier",
    "WindowClassifierDetector",
    "WindowSplit",
    "f1_threshold",
    "labelled_windows",
    "robust_scaler",
    "split_windows",
    "window_targets",
]
