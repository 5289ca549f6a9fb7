"""TS-DAGMM (kind ``dagmm``): DAGMM over whole time-series windows, read in this order:

- :mod:`~model.detectors.dagmm.config`: :class:`TSDAGMMConfig`, every setting;
- :mod:`~model.detectors.dagmm.features`: the reconstruction features of a window;
- :mod:`~model.detectors.dagmm.mixture`: the per-batch mixture and its energy;
- :mod:`~model.detectors.dagmm.network`: the :class:`TSDAGMM` network;
- :mod:`~model.detectors.dagmm.detector`: :class:`TSDAGMMDetector`, training, scoring and
  checkpoints, with the model and its deviations from the references.
"""

from model.detectors.dagmm.config import RECON_FEATURES, TSDAGMMConfig
from model.detectors.dagmm.detector import TSDAGMMDetector
from model.detectors.dagmm.features import band_alignment_error, reconstruction_features
from model.detectors.dagmm.mixture import batch_mixture, feature_floor, mixture_energy
from model.detectors.dagmm.network import TSDAGMM

__all__ = [
    "RECON_FEATURES",
    "TSDAGMM",
    "TSDAGMMConfig",
    "TSDAGMMDetector",
    "band_alignment_error",
    "batch_mixture",
    "feature_floor",
    "mixture_energy",
    "reconstruction_features",
]
