"""The nearest-cycle detector (kind ``knn``), read in this order:

- :mod:`~model.detectors.nearest.distances`: Euclidean, banded DTW and SBD distances between
  cycles resampled to a common number of points;
- :mod:`~model.detectors.nearest.cycles`: :class:`NearestCycles`, the reference cycles kept as
  buffers and their cross-fitted calibration;
- :mod:`~model.detectors.nearest.config`: :class:`NearestConfig`, every setting;
- :mod:`~model.detectors.nearest.detector`: :class:`NearestCycleDetector`, fitting, scoring
  and checkpoints.
"""

from model.detectors.nearest.config import NearestConfig
from model.detectors.nearest.cycles import METRICS, NearestCycles
from model.detectors.nearest.detector import NearestCycleDetector

__all__ = ["METRICS", "NearestConfig", "NearestCycleDetector", "NearestCycles"]
