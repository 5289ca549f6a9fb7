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
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from model.base import CalibratedDetector, WindowScore, module_tensors
from model.detectors.seq2gmm.config import Seq2GMMConfig, default_config, load_config
from model.detectors.seq2gmm.crossfit import out_of_fold_energies
from model.detectors.seq2gmm.evidence import CycleEvidence
from model.detectors.seq2gmm.network import Seq2GMM
from model.detectors.seq2gmm.score import EnergyNormaliser, aggregate, window_results
from model.detectors.seq2gmm.train import (
    MixtureFit,
    TrainResult,
    select_components,
    select_segments,
    train_from_config,
)
from model.errors import CheckpointError, DataError, Seq2GMMError
from model.fitting import as_windows, held_out_split, input_standardisation, seeded
from model.segmentation import make_segmenter
from model.segmentation.base import (
    Segmentation,
    SegmentBatch,
    Segmenter,
    pack_segments,
)
from model.thresholds import EnergyQuantiles

EpochCallback = Callable[[int, dict[str, float]], None]

SCORE_CHUNK = 8192  # at most this many segments per forward pass when scoring
# and at most this many segment samples (segments x longest length): the activations of one pass
# take ~1.5 kB a sample (default config): one pass over 256 windows of 1,000 samples (longest
# segment 960) raised peak RSS by +382 MB, passes of 2^16 samples by +26 MB and ran faster
SCORE_SAMPLES = 2**16
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


def _split_segments(
    batch: SegmentBatch, train_idx: np.ndarray, val_idx: np.ndarray
) -> tuple[SegmentBatch, SegmentBatch | None]:
    """The segments of the training windows and (if any are held out) of the held-out ones."""
    train_mask = np.isin(batch.window.numpy(), train_idx)
    train = select_segments(batch, torch.as_tensor(np.flatnonzero(train_mask)))
    if not val_idx.size:
        return train, None
    return train, select_segments(batch, torch.as_tensor(np.flatnonzero(~train_mask)))


class Seq2GMMDetector(CalibratedDetector[Seq2GMM]):
    """Seq2GMM anomaly detector (kind "seq2gmm"); see the module docstring."""

    kind = "seq2gmm"
    config_class = Seq2GMMConfig

    def __init__(self, config: Seq2GMMConfig | None = None, *, device: str | torch.device = "cpu"):
        super().__init__(device=device)
        self.config = config if config is not None else default_config()
        self.normaliser = EnergyNormaliser.identity()
        self.evidence: CycleEvidence | None = None  # whole-cycle evidence (scoring.cycle_metrics)
        self._segmenter: Segmenter | None = None

    @classmethod
    def read_config(cls, config: Any) -> Seq2GMMConfig | None:
        """None (the default config), a :class:`Seq2GMMConfig`, a dict, a config name
        ("faithful", "default") or the path of a JSON file (see ``load_config``)."""
        if config is None or isinstance(config, Seq2GMMConfig):
            return config
        if isinstance(config, str | Path):
            return load_config(config)
        if isinstance(config, Mapping):
            return Seq2GMMConfig.from_dict(dict(config))
        raise Seq2GMMError(
            "the seq2gmm config must be a Seq2GMMConfig, a config name or JSON path, or a dict;"
            f" got {type(config).__name__}"
        )

    # ------------------------------------------------------------------ state
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
        self._segmenter = None
        if self.evidence is not None:
            self.evidence.to(torch.device(device))
        return super().to(device)

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
        k = cfg.segmentation.n_segments
        wins = as_windows(windows, who=f"Seq2GMM with {k} segments", min_length=k + 1)
        self.seed = seed
        self._segmenter = None
        ts = time.perf_counter()
        batch_all = self._segment(wins, segmentation)
        seg_seconds = time.perf_counter() - ts

        # held-out normals from the training windows (seeded), never from test data
        train_idx, val_idx = held_out_split(
            len(wins),
            cfg.train.validation_fraction,
            seed,
            min_validation=cfg.train.min_validation_windows,
        )
        train_batch, val_batch = _split_segments(batch_all, train_idx, val_idx)
        with seeded(seed, self.device):
            trained = self._train_model(cfg, wins, train_idx, train_batch, val_batch, on_epoch)
        self._install(trained, wins)
        window_scores = self._calibrate(batch_all, wins, train_idx, val_idx)
        lengths = np.array([w.shape[0] for w in wins])
        result = trained.result
        self.training_summary = {
            "n_windows": len(wins),
            "n_train_windows": len(train_idx),
            "n_validation_windows": int(val_idx.size),
            "n_segments": int(batch_all.values.shape[0]),
            "window_length_min": int(lengths.min()),
            "window_length_max": int(lengths.max()),
            "n_features": self.n_features,
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
            "n_components": self.config.network.n_components,
            "component_validation_log_likelihood": {
                str(n): ll for n, ll in trained.candidate_log_likelihood.items()
            },
        }
        return self

    def _install(self, trained: _Trained, wins: list[np.ndarray]) -> None:
        """Keep the trained network, its history and the training windows' geometry."""
        if trained.n_components is not None:
            # the checkpoint rebuilds the model from the config: record the chosen size
            net_cfg = replace(self.config.network, n_components=trained.n_components)
            self.config = replace(self.config, network=net_cfg)
        self.model = trained.net
        self.n_features = int(wins[0].shape[1])
        lengths = {w.shape[0] for w in wins}
        self.window_length = int(lengths.pop()) if len(lengths) == 1 else None
        self.history = trained.result.history

    def _calibrate(
        self,
        batch_all: SegmentBatch,
        wins: list[np.ndarray],
        train_idx: np.ndarray,
        val_idx: np.ndarray,
    ) -> np.ndarray:
        """Energy calibration, the whole-cycle evidence (when configured), score quantiles and
        the normal reference scores; returns the (N,) window scores of all training windows.

        The reference: with ``scoring.cross_fit_folds`` every training window scored out of
        fold (see :mod:`~model.detectors.seq2gmm.crossfit`), else the held-out windows' scores
        (the training ones' without a validation share)."""
        cfg = self.config
        self.normaliser = EnergyNormaliser.identity()
        raw, positions = self._raw_energies(batch_all)
        if cfg.scoring.energy_norm == "position":
            self.normaliser = EnergyNormaliser.fit(raw, positions, cfg.segmentation.n_segments)
        cross_fitted = cfg.scoring.cross_fit_folds > 0
        if cross_fitted:  # every training window's energies as a new window's
            raw = self._out_of_fold_energies(batch_all, train_idx)
        window_scores = self._aggregate(self.normaliser.apply(raw, positions), batch_all).numpy()
        self.evidence = None
        if cfg.scoring.cycle_metrics:
            self.evidence, window_scores = CycleEvidence.fit(
                wins,
                window_scores,
                np.arange(len(wins)) if cross_fitted else val_idx,
                metrics=cfg.scoring.cycle_metrics,
                max_points=cfg.scoring.cycle_points,
                max_references=cfg.scoring.cycle_references,
                seed=self.seed or 0,
            )
            self.evidence.to(self.device)
        if cross_fitted:
            ref = window_scores
        else:
            ref = window_scores[val_idx] if val_idx.size else window_scores[train_idx]
        self.reference_scores = ref.astype(np.float64)
        self.quantiles = EnergyQuantiles.from_scores(ref if cross_fitted else window_scores)
        self._threshold = None
        if cfg.scoring.threshold_fpr is not None:
            self.infer_threshold(fpr=cfg.scoring.threshold_fpr)
        return window_scores

    def _out_of_fold_energies(self, batch_all: SegmentBatch, train_idx: np.ndarray) -> torch.Tensor:
        cfg = self.config
        return out_of_fold_energies(
            self._require_model(),
            batch_all,
            train_idx,
            n_folds=cfg.scoring.cross_fit_folds,
            how=MixtureFit.from_config(cfg),
            seed=self.seed or 0,
        )

    def _train_model(
        self,
        cfg: Seq2GMMConfig,
        wins: list[np.ndarray],
        train_idx: np.ndarray,
        train_batch: SegmentBatch,
        val_batch: SegmentBatch | None,
        on_epoch: EpochCallback | None,
    ) -> _Trained:
        """A new network trained on ``train_batch`` (inside :func:`seeded`), its mixture size
        chosen on ``val_batch`` when the config lists candidates."""
        seed = self.seed or 0
        model = build_model(cfg, int(wins[0].shape[1]))
        if cfg.train.normalise_input:
            mean, std = input_standardisation([wins[i] for i in train_idx])
            model.set_normalisation(mean, std)
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
                MixtureFit.from_config(cfg),
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
        n, longest = batch.values.shape[:2]
        rows = max(1, min(SCORE_CHUNK, SCORE_SAMPLES // max(1, longest)))
        outs: list[torch.Tensor] = []
        with torch.inference_mode():
            for idx in torch.split(torch.arange(n, device=self.device), rows):
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
        k = self.config.segmentation.n_segments
        return as_windows(
            windows, who=f"Seq2GMM with {k} segments", n_features=self.n_features, min_length=k + 1
        )

    def segment_energies(
        self, windows: Sequence[np.ndarray], *, segmentation: Segmentation | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, SegmentBatch]:
        """Calibrated (S,) and raw (S,) segment energies and the segment batch they belong to."""
        return self._segment_energies(self._check_windows(windows), segmentation)

    def _segment_energies(
        self, wins: list[np.ndarray], segmentation: Segmentation | None
    ) -> tuple[torch.Tensor, torch.Tensor, SegmentBatch]:
        batch = self._segment(wins, segmentation)
        raw, positions = self._raw_energies(batch)
        return self.normaliser.apply(raw, positions), raw, batch

    def _window_scores(
        self, wins: list[np.ndarray], energies: torch.Tensor, batch: SegmentBatch
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N,) window scores and (S,) segment scores on the same scale: the aggregated and
        the segments' own energies, each combined with its window's whole-cycle evidence when
        the model has it (a segment's score is then the window score it alone would give).
        ``wins`` are already checked (:meth:`_check_windows`)."""
        scores = self._aggregate(energies, batch).numpy().astype(np.float64)
        seg = energies.numpy().astype(np.float64)
        if self.evidence is None:
            return scores, seg
        distances = self.evidence.cycles.distances(wins)  # (N, M)
        seg = self.evidence.combine_scores(seg, distances[batch.window.cpu().numpy()])
        return self.evidence.combine_scores(scores, distances), seg

    def score(
        self, windows: Sequence[np.ndarray], *, segmentation: Segmentation | None = None
    ) -> np.ndarray:
        """(N,) float64 window scores, higher = more anomalous. No gradient, deterministic."""
        wins = self._check_windows(windows)
        energies, _, batch = self._segment_energies(wins, segmentation)
        return self._window_scores(wins, energies, batch)[0]

    def score_detailed(
        self, windows: Sequence[np.ndarray], *, segmentation: Segmentation | None = None
    ) -> list[WindowScore]:
        """Per-window results: score, per-segment energies and sample intervals, top segment,
        percentile among training scores and (with a threshold) the decision."""
        wins = self._check_windows(windows)
        energies, raw, batch = self._segment_energies(wins, segmentation)
        scores, segment_scores = self._window_scores(wins, energies, batch)
        results = window_results(
            scores,
            segment_scores,
            raw.numpy(),
            batch.window.cpu().numpy(),
            batch.start.cpu().numpy(),
            batch.end.cpu().numpy(),
        )
        return self.decide(results, scores)

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
        if self.evidence is not None:
            tensors.update(self.evidence.tensors())
        return tensors

    def checkpoint_metadata(self) -> dict[str, Any]:
        net = self._require_model()
        return {
            "segmentation": self.config.segmentation.__dict__.copy(),
            "normalisation": net.normalisation_metadata(),
        }

    def restore(self, tensors: Mapping[str, torch.Tensor], n_features: int) -> None:
        net = build_model(self.config, n_features)
        self.model = self._restore_network(_MODEL, net, tensors, n_features)
        if _CAL_LOC in tensors:
            self.normaliser = EnergyNormaliser(tensors[_CAL_LOC], tensors[_CAL_SCALE])
        metrics = self.config.scoring.cycle_metrics
        self.evidence = CycleEvidence.restore(tensors, metrics, n_features)
        if metrics and self.evidence is None:
            raise CheckpointError(
                "the config scores whole cycles (scoring.cycle_metrics) but the weights hold no"
                " reference cycles; the checkpoint is incomplete: save it again from the model"
            )
        if self.evidence is not None:
            self.evidence.to(self.device)
