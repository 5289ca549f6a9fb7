"""The nearest-cycle detector (kind ``knn``): a window's score is its distance to the nearest
normal training cycle, servable like every other kind (the cycles travel in the checkpoint).

    det = NearestCycleDetector(NearestConfig(metric="euclidean")).fit(train_windows, seed=0)
    scores = det.score(test_windows)         # (N,) float64, higher = more anomalous

What it does, in terms of :class:`~model.detectors.nearest.cycles.NearestCycles`:

- fit: every training window is standardised with the per-feature mean and std of the training
  samples and linearly resampled to ``P`` points, the median training length but at most
  ``max_points``; up to ``max_references`` of them (a sample seeded by ``seed`` when there are
  more) are kept as the reference cycles, stored as float32 buffers of the network.
- score: the query is standardised and resampled the same way, and its score is the distance to
  the nearest reference under ``metric`` (Euclidean on the flattened cycle, banded DTW or SBD).
  Windows of any length are taken: they are resampled, so the worker can serve cycles.
- calibration: every training window's reference distance is cross-fitted (leave-one-out for
  the kept references, out-of-sample for the others), which is what a new normal window gets;
  these are the :attr:`reference_scores` of the threshold (``threshold_fpr``) and the training
  scores of the percentiles. In-sample distances (0 for a kept reference) would be useless.

It is the 1-NN that the literature compares against: for equal-length windows of at most
``max_points`` samples nothing is resampled, and for univariate windows every Euclidean
distance is the raw 1-NN distance divided by the training std (float32 round-off aside), so
the ranking, hence the ROC AUC, is that of 1-NN on the raw windows. Multivariate windows are
compared with each feature standardised, so no feature wins by its units alone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
import torch

from model.base import CalibratedDetector, module_tensors
from model.detectors.nearest.config import NearestConfig
from model.detectors.nearest.cycles import NearestCycles, cycle_points
from model.errors import CheckpointError
from model.fitting import as_windows

_MODEL = "model."  # checkpoint tensor prefix


class NearestCycleDetector(CalibratedDetector[NearestCycles]):
    """Distance to the nearest normal training cycle (kind "knn"); see the module docstring."""

    kind = "knn"
    config_class = NearestConfig

    def __init__(
        self, config: NearestConfig | None = None, *, device: str | torch.device = "cpu"
    ) -> None:
        super().__init__(device=device)
        self.config = config if config is not None else NearestConfig()

    def _network(self, n_features: int, points: int, n_references: int = 1) -> NearestCycles:
        cfg = self.config
        return NearestCycles(
            n_features, [cfg.metric], points,
            band=cfg.band, candidates=cfg.candidates, n_references=n_references,
        )  # fmt: skip

    # ------------------------------------------------------------------ training
    def fit(
        self, windows: Sequence[np.ndarray] | np.ndarray, *, seed: int = 0, progress: bool = False
    ) -> Self:
        """Keep the (resampled) training cycles and calibrate on their cross-fitted distances.
        Deterministic per seed (the seed only picks the references beyond max_references)."""
        del progress  # model code never prints
        t0 = time.perf_counter()
        cfg = self.config
        wins = as_windows(windows, who="the knn detector")
        lengths = np.array([w.shape[0] for w in wins])
        n_features = wins[0].shape[1]
        net = self._network(n_features, cycle_points(wins, cfg.max_points)).to(self.device)
        reference = net.fit(wins, cfg.max_references, seed)[:, 0]
        net.eval()
        self.model = net
        self.n_features = n_features
        self.window_length = int(lengths[0]) if np.all(lengths == lengths[0]) else None
        self.seed = seed
        self.history = []
        self.calibrate(reference, reference)
        if cfg.threshold_fpr is not None:
            self.infer_threshold(fpr=cfg.threshold_fpr)
        fit_seconds = time.perf_counter() - t0
        self.training_summary = {
            "n_windows": len(wins),
            "n_references": int(net.cycles.shape[0]),
            "points": net.points,
            "metric": cfg.metric,
            "n_features": n_features,
            "window_length_min": int(lengths.min()),
            "window_length_max": int(lengths.max()),
            "seed": seed,
            "device": str(self.device),
            "train_seconds": fit_seconds,
            "fit_seconds": fit_seconds,
            "train_score_mean": float(reference.mean()),
            "train_score_std": float(reference.std()),
        }
        return self

    # ------------------------------------------------------------------ scoring
    def score(self, windows: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """(N,) float64 distance of each window to its nearest training cycle."""
        net = self._require_model()
        wins = as_windows(windows, who="the knn detector", n_features=self.n_features)
        return np.ascontiguousarray(net.distances(wins)[:, 0], dtype=np.float64)

    # ------------------------------------------------------------------ checkpoint hooks
    def checkpoint_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return module_tensors(_MODEL, self._require_model())

    def checkpoint_metadata(self) -> dict[str, Any]:
        net = self._require_model()
        return {
            "points": net.points,
            "n_references": int(net.cycles.shape[0]),
            "normalisation": net.normalisation_metadata(),
        }

    def restore(self, tensors: Mapping[str, torch.Tensor], n_features: int) -> None:
        cycles = tensors.get(_MODEL + "cycles")
        if cycles is None or cycles.ndim != 3 or cycles.shape[2] != n_features:
            shape = None if cycles is None else tuple(cycles.shape)
            raise CheckpointError(
                f"the knn checkpoint needs {_MODEL}cycles of shape (references, points,"
                f" {n_features}), got {shape}"
            )
        n_references, points = int(cycles.shape[0]), int(cycles.shape[1])
        net = self._network(n_features, points, n_references)
        self.model = self._restore_network(_MODEL, net, tensors, n_features)
