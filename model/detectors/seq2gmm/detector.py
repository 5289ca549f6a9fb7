"""Seq2GMMDetector: segmentation + networks + mixture + calibration behind the Detector protocol.

    det = Seq2GMMDetector(load_config("default")).fit(train_windows, seed=0)
    scores = det.score(test_windows)                    # (N,) float64, higher = more anomalous
    details = det.score_detailed(test_windows)          # per-window energies and intervals
    det.infer_threshold(fpr=0.01); det.predict(test_windows)

Held-out normals: with ``train.validation_fraction > 0`` a seeded share of the training windows
(never test data) is kept out of the gradient steps; it drives early stopping and model
selection, and its window scores are the reference for :meth:`infer_threshold`. Without a
validation split the training windows' own scores are the reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Self

import numpy as np
import torch

from model.base import CalibratedDetector, WindowScore, module_tensors
from model.detectors.seq2gmm.config import Seq2GMMConfig, default_config
from model.detectors.seq2gmm.network import Seq2GMM
from model.detectors.seq2gmm.score import EnergyNormaliser, aggregate, window_results
from model.detectors.seq2gmm.train import (
    TrainResult,
    select_components,
    select_segments,
    train_from_config,
)
from model.errors import DataError
from model.segmentation import make_segmenter
from model.segmentation.base import (
    Segmentation,
    SegmentBatch,
    Segmenter,
    as_window,
    pack_segments,
)
from model.thresholds import EnergyQuantiles

EpochCallback = Callable[[int, dict[str, float]], None]

SCORE_CHUNK = 8192  # segments per forward pass when scoring
_MODEL = "model."  # checkpoint tensor prefixes
_CAL_LOC = "scoring.energy_loc"
_CAL_SCALE = "scoring.energy_scale"


def build_model(cfg: Seq2GMMConfig, n_features: int) -> Seq2GMM:
    """The :class:`Seq2GMM` module described by ``cfg`` for ``n_features`` input features."""
    n = cfg.network
    return Seq2GMM(
        n_features=n_features,
        hidden_size=n.hidden_size,
        num_layers=n.num_layers,
        bidirectional=n.bidirectional,
        decoder=n.decoder,
        eos_value=n.eos_value,
        eos_in_target=n.eos_in_target,
        extra_steps=n.extra_steps,
        recon_eps=n.recon_eps,
        descriptors=n.descriptors,
        estimator_hidden=n.estimator_hidden,
        estimator_activation=n.estimator_activation,
        estimator_dropout=n.estimator_dropout,
        n_components=n.n_components,
        covariance=n.covariance,
        energy_eps=n.energy_eps,
        n_positions=cfg.segmentation.n_segments if n.per_position else 1,
        membership=n.membership,
        shape_points=n.shape_points,
        z_parts=n.z_parts,
        context_points=n.context_points,
    )


@dataclass
class _Trained:
    net: Seq2GMM
    result: TrainResult
    n_components: int | None  # chosen by held-out likelihood, or None (config's)
    candidate_log_likelihood: dict[int, float]


def _windows(windows: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    if isinstance(windows, np.ndarray) and windows.ndim in (2, 3):
        out = [as_window(w) for w in windows]
    else:
        out = [as_window(w) for w in windows]
    if not out:
        raise DataError("no windows given")
    return out


class Seq2GMMDetector(CalibratedDetector):
    """Seq2GMM anomaly detector (kind "seq2gmm"); see the module docstring."""

    kind = "seq2gmm"

    def __init__(self, config: Seq2GMMConfig | None = None, *, device: str | torch.device = "cpu"):
        super().__init__(device=device)
        self.config = config if config is not None else default_config()
        self.model: Seq2GMM | None = None
        self.normaliser = EnergyNormaliser.identity()
        self._segmenter: Segmenter | None = None

    # ------------------------------------------------------------------ state
    @property
    def is_fitted(self) -> bool:
        return self.model is not None

    def _require_model(self) -> Seq2GMM:
        self._require_fitted()
        assert self.model is not None
        return self.model

    @property
    def segmenter(self) -> Segmenter:
        if self._segmenter is None:
            s = self.config.segmentation
            self._segmenter = make_segmenter(
                s.method, s.n_segments, seed=self.seed or 0, device=self.device
            )
        return self._segmenter

    def to(self, device: str | torch.device) -> Self:
        """Move the model (and future segmentation) to ``device``."""
        self.device = torch.device(device)
        self._segmenter = None
        if self.model is not None:
            self.model.to(self.device)
        return self

    # ------------------------------------------------------------------ segmentation
    def _segment(
        self, windows: list[np.ndarray], segmentation: Segmentation | None
    ) -> SegmentBatch:
        n_seg = self.config.segmentation.n_segments
        if segmentation is None:
            segmentation = self.segmenter.segment(windows)
        if segmentation.n_segments != n_seg:
            raise DataError(
                f"the segmentation has {segmentation.n_segments} segments per window but the"
                f" config says {n_seg}; segment with segmentation.n_segments = {n_seg}"
            )
        return pack_segments(windows, segmentation)

    # ------------------------------------------------------------------ training
    def fit(
        self,
        windows: Sequence[np.ndarray],
        *,
        seed: int = 0,
        progress: bool = False,
        on_epoch: EpochCallback | None = None,
        segmentation: Segmentation | None = None,
    ) -> Self:
        """Train on normal windows (shape (L,) or (L, F) each). Deterministic per seed and device.

        ``segmentation``: precomputed breakpoints for ``windows`` (e.g. the reference's cached
        TwoLeadECG cuts); otherwise the configured segmenter cuts them. ``progress`` is accepted
        for the Detector protocol; model code never prints, pass ``on_epoch`` to observe.
        """
        del progress
        cfg = self.config
        t0 = time.perf_counter()
        wins = _windows(windows)
        widths = {w.shape[1] for w in wins}
        if len(widths) != 1:
            raise DataError(
                f"all windows must have the same number of features, got {sorted(widths)}"
            )
        n_features = widths.pop()
        lengths = np.array([w.shape[0] for w in wins])
        if lengths.min() < cfg.segmentation.n_segments + 1:
            raise DataError(
                f"windows need at least {cfg.segmentation.n_segments + 1} samples for"
                f" {cfg.segmentation.n_segments} segments; the shortest has {lengths.min()}"
            )
        self.seed = seed
        self._segmenter = None
        ts = time.perf_counter()
        batch_all = self._segment(wins, segmentation)
        seg_seconds = time.perf_counter() - ts

        # held-out normals from the training windows (seeded), never from test data
        n = len(wins)
        n_val = round(cfg.train.validation_fraction * n)
        if cfg.train.validation_fraction > 0 and n_val < cfg.train.min_validation_windows:
            n_val = (
                cfg.train.min_validation_windows if n - cfg.train.min_validation_windows >= 2 else 0
            )
        perm = np.random.default_rng(seed).permutation(n)
        val_idx = np.sort(perm[:n_val])
        train_idx = np.sort(perm[n_val:])
        seg_win = batch_all.window.numpy()
        train_mask = np.isin(seg_win, train_idx)
        train_batch = select_segments(batch_all, torch.as_tensor(np.flatnonzero(train_mask)))
        val_batch = (
            select_segments(batch_all, torch.as_tensor(np.flatnonzero(~train_mask)))
            if n_val
            else None
        )

        # seeded without touching the caller's global RNG state
        rng_devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices, device_type=self.device.type):
            torch.manual_seed(seed)
            trained = self._train_model(
                cfg, n_features, wins, train_idx, train_batch, val_batch, seed, on_epoch
            )
        result = trained.result
        if trained.n_components is not None:
            # the checkpoint rebuilds the model from the config: record the chosen size
            net_cfg = replace(cfg.network, n_components=trained.n_components)
            self.config = cfg = replace(cfg, network=net_cfg)
        self.model = trained.net
        self.n_features = n_features
        self.window_length = int(lengths[0]) if np.all(lengths == lengths[0]) else None
        self.history = result.history
        self.normaliser = EnergyNormaliser.identity()

        # calibration on every training window, reference scores on the held-out ones
        raw, positions = self._raw_energies(batch_all)
        if cfg.scoring.energy_norm == "position":
            self.normaliser = EnergyNormaliser.fit(raw, positions, cfg.segmentation.n_segments)
        energies = self.normaliser.apply(raw, positions)
        window_scores = self._aggregate(energies, batch_all).numpy()
        ref = window_scores[val_idx] if n_val else window_scores[train_idx]
        self.reference_scores = ref.astype(np.float64)
        self.quantiles = EnergyQuantiles.from_scores(window_scores)
        self._threshold = None
        if cfg.scoring.threshold_fpr is not None:
            self.infer_threshold(fpr=cfg.scoring.threshold_fpr)
        self.training_summary = {
            "n_windows": n,
            "n_train_windows": len(train_idx),
            "n_validation_windows": int(n_val),
            "n_segments": int(batch_all.values.shape[0]),
            "window_length_min": int(lengths.min()),
            "window_length_max": int(lengths.max()),
            "n_features": n_features,
            "seed": seed,
            "device": str(self.device),
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "segmentation_seconds": seg_seconds,
            "train_seconds": result.seconds,
            "fit_seconds": time.perf_counter() - t0,
            "segmentation": "precomputed" if segmentation is not None else cfg.segmentation.method,
            "train_score_mean": float(window_scores.mean()),
            "train_score_std": float(window_scores.std()),
            "n_components": cfg.network.n_components,
            "component_validation_log_likelihood": {
                str(k): v for k, v in trained.candidate_log_likelihood.items()
            },
        }
        return self

    def _train_model(
        self,
        cfg: Seq2GMMConfig,
        n_features: int,
        wins: list[np.ndarray],
        train_idx: np.ndarray,
        train_batch: SegmentBatch,
        val_batch: SegmentBatch | None,
        seed: int,
        on_epoch: EpochCallback | None,
    ) -> _Trained:
        model = build_model(cfg, n_features)
        if cfg.train.normalise_input:
            stacked = np.concatenate([wins[i] for i in train_idx], axis=0)
            std = stacked.std(0)
            model.set_normalisation(
                torch.as_tensor(stacked.mean(0), dtype=torch.float32),
                torch.as_tensor(np.where(std > 1e-8, std, 1.0), dtype=torch.float32),
            )
        model.to(self.device)
        result = train_from_config(model, train_batch, val_batch, cfg, seed=seed, on_epoch=on_epoch)
        chosen: int | None = None
        ll: dict[int, float] = {}
        if cfg.train.component_candidates and val_batch is not None:
            chosen, ll = select_components(
                model,
                train_batch,
                val_batch,
                cfg.train.component_candidates,
                floor_abs=cfg.network.cov_floor,
                floor_rel=cfg.network.cov_floor_relative,
                shrinkage=cfg.network.cov_shrinkage,
                em_max_iter=cfg.train.em_max_iter,
                em_tol=cfg.train.em_tol,
                seed=seed,
            )
        return _Trained(model, result, chosen, ll)

    # ------------------------------------------------------------------ scoring
    def _raw_energies(self, batch: SegmentBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(S,) float64 raw segment energies (on CPU) and (S,) segment positions."""
        model = self._require_model()
        model.eval()
        batch = batch.to(self.device)
        info = model.segment_info(batch)
        n = batch.values.shape[0]
        outs: list[torch.Tensor] = []
        with torch.inference_mode():
            for idx in torch.split(torch.arange(n, device=self.device), SCORE_CHUNK):
                if idx.shape[0] == n:
                    out = model(batch, info)
                else:
                    out = model(select_segments(batch, idx), info.select(idx))
                outs.append(model.energy(out).to(torch.float64).cpu())
        return torch.cat(outs), info.position.cpu()

    def _aggregate(self, energies: torch.Tensor, batch: SegmentBatch) -> torch.Tensor:
        return aggregate(
            energies,
            batch.window.cpu(),
            batch.lengths.cpu(),
            batch.n_windows,
            self.config.scoring.aggregate,
        )

    def _check_windows(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        self._require_model()
        wins = _windows(windows)
        for i, w in enumerate(wins):
            if w.shape[1] != self.n_features:
                raise DataError(
                    f"window {i} has {w.shape[1]} features but the model was trained on"
                    f" {self.n_features}"
                )
            if w.shape[0] < self.config.segmentation.n_segments + 1:
                raise DataError(
                    f"window {i} has {w.shape[0]} samples; at least"
                    f" {self.config.segmentation.n_segments + 1} are needed"
                )
        return wins

    def segment_energies(
        self, windows: Sequence[np.ndarray], *, segmentation: Segmentation | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, SegmentBatch]:
        """Calibrated (S,) and raw (S,) segment energies and the segment batch they belong to."""
        wins = self._check_windows(windows)
        batch = self._segment(wins, segmentation)
        raw, positions = self._raw_energies(batch)
        return self.normaliser.apply(raw, positions), raw, batch

    def score(
        self, windows: Sequence[np.ndarray], *, segmentation: Segmentation | None = None
    ) -> np.ndarray:
        """(N,) float64 window scores, higher = more anomalous. No gradient, deterministic."""
        energies, _, batch = self.segment_energies(windows, segmentation=segmentation)
        return self._aggregate(energies, batch).numpy().astype(np.float64)

    def score_detailed(
        self, windows: Sequence[np.ndarray], *, segmentation: Segmentation | None = None
    ) -> list[WindowScore]:
        """Per-window results: score, per-segment energies and sample intervals, top segment,
        percentile among training scores and (with a threshold) the decision."""
        energies, raw, batch = self.segment_energies(windows, segmentation=segmentation)
        scores = self._aggregate(energies, batch).numpy().astype(np.float64)
        results = window_results(
            scores,
            energies.numpy(),
            raw.numpy(),
            batch.window.cpu().numpy(),
            batch.start.cpu().numpy(),
            batch.end.cpu().numpy(),
        )
        pct = self.quantiles.percentiles(scores) if self.quantiles is not None else None
        for i, r in enumerate(results):
            if pct is not None:
                r.percentile = float(pct[i])
            if self._threshold is not None:
                r.is_anomaly = bool(scores[i] > self._threshold.value)
        return results

    def predict(
        self, windows: Sequence[np.ndarray], *, segmentation: Segmentation | None = None
    ) -> np.ndarray:
        """(N,) bool: score > threshold. ThresholdNotSetError without a threshold."""
        thr = self.threshold
        return self.score(windows, segmentation=segmentation) > thr.value

    def reconstruct(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each window's reconstruction, (L, F) per window, stitched from its segments'
        decoder outputs (a sample shared by two segments takes the later segment's value)."""
        wins = self._check_windows(windows)
        model = self._require_model()
        model.eval()
        batch = self._segment(wins, None).to(self.device)
        out_windows = [np.full_like(w, np.nan) for w in wins]
        with torch.inference_mode():
            out = model(batch)
        recon = out.recon.to(torch.float64).cpu().numpy()  # (S, T', F), model input units
        mean = model.input_mean.detach().cpu().double().numpy()
        std = model.input_std.detach().cpu().double().numpy()
        for s in range(recon.shape[0]):
            n = int(batch.window[s])
            start, end = int(batch.start[s]), int(batch.end[s])
            length = end - start + 1
            out_windows[n][start : end + 1] = recon[s, :length] * std + mean
        return out_windows

    # ------------------------------------------------------------------ checkpoint hooks
    def checkpoint_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        tensors = module_tensors(_MODEL, self._require_model())
        tensors[_CAL_LOC] = self.normaliser.loc.detach().cpu().contiguous().clone()
        tensors[_CAL_SCALE] = self.normaliser.scale.detach().cpu().contiguous().clone()
        return tensors

    def checkpoint_metadata(self) -> dict[str, Any]:
        net = self._require_model()
        return {
            "segmentation": self.config.segmentation.__dict__.copy(),
            "normalisation": {
                "mean": net.input_mean.detach().cpu().double().tolist(),
                "std": net.input_std.detach().cpu().double().tolist(),
            },
        }

    @classmethod
    def from_checkpoint(
        cls,
        config: Mapping[str, Any],
        tensors: Mapping[str, torch.Tensor],
        *,
        n_features: int,
        device: str | torch.device = "cpu",
    ) -> Self:
        cfg = Seq2GMMConfig.from_dict(dict(config))  # DataError: wrapped by the caller
        det = cls(cfg, device=device)
        det.model = det._restore_network(_MODEL, build_model(cfg, n_features), tensors, n_features)
        if _CAL_LOC in tensors:
            det.normaliser = EnergyNormaliser(tensors[_CAL_LOC], tensors[_CAL_SCALE])
        return det
