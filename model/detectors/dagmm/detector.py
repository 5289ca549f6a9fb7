"""TS-DAGMM: DAGMM (Zong et al., ICLR 2018) over whole time-series windows, without segmentation.

The ablation that shows what Seq2GMM's segmentation buys: one code per WHOLE window.

    det = TSDAGMMDetector().fit(train_windows, seed=0)     # windows (L,) or (L, F), any L >= 2
    scores = det.score(test_windows)                        # (N,) float64 energies

Model (shapes for a batch of B windows padded to T samples with F features):

- compression network: a 2-layer bidirectional LSTM reads each window packed to its true
  length; the last layer's final forward and backward states give the code z_c (B, latent)
  through a linear map. The code is repeated over time into a 2-layer LSTM decoder (plus the
  relative time t / (L - 1) as one more input channel, see deviations) whose linear read-out is
  the reconstruction x' (B, T, F).
- reconstruction features, each over a window's TRUE samples only (padding never enters):
  ``rd`` = |x - x'| / |x| and ``cos`` = <x, x'> / (|x| |x'|) as in DAGMM, plus the temporal
  errors of the time-series extension: ``mse``, ``mae``, ``align`` (a band-limited alignment
  error, below) and ``trend`` (mean absolute error of the first differences).
  z = [z_c, features] (B, D).
- estimation network: MLP (tanh, dropout) + softmax -> memberships gamma (B, K).
- mixture, per batch as in DAGMM: phi_k = mean_i gamma_ik, mu_k and full covariances Sigma_k
  as gamma-weighted moments; energy E(z) = -logsumexp_k(log phi_k + log N(z; mu_k, Sigma_k))
  through Cholesky factors (:func:`model.gmm.log_gaussian_full`), in float64.
- loss = masked reconstruction MSE + lambda_energy * mean(E) + lambda_cov * sum_kj 1/Sigma_kjj.

After training (in float32), the network is converted to float64 (the weights are upcast
exactly) and the mixture (phi, mu, Sigma) is fitted once to the z of the training share with
the trained estimation network's gammas, as DAGMM does at test time, and stored as buffers.
A window's score is its energy under that fixed mixture, so it does not depend on the other
windows of a batch; float64 keeps the remaining round-off of batched LSTM arithmetic at
~1e-12 (in float32 it reached 1e-4 relative: the fitted energy is steep in z).

Deviations from the references (DAGMM and the BintongZhao time-series branch), and why:

- "DTW-like" error: we do not claim DTW. ``align`` is a symmetric band-limited alignment
  error: each sample is matched to the closest sample of the other sequence within
  ``align_band * L`` steps (no monotone warping path) and the mean absolute distances of both
  directions are averaged. It forgives small phase shifts like DTW does, at O(L * band) cost.
- Covariance floor instead of tiny jitter. Every covariance is floored at
  ``cov_floor + cov_floor_relative * var(z_d)``: during training additively (Sigma + diag(f),
  differentiable; the exact Loewner projection goes through eigh, whose gradient is undefined
  at the repeated eigenvalues the clamp creates), for the fitted mixture by the exact projection
  :func:`model.gmm.floored_covariance`. The covariance penalty uses the floored diagonal.
- ``rd`` and ``cos`` add ``recon_eps * n`` to the squared norms, so a constant window
  (all zeros after normalisation) gets a finite, bounded feature instead of |x'| / 1e-12.
- Log distances (``log_errors``): the errors enter z as log(err + error_eps) and the cosine
  similarity as log(1 - cos + error_eps). Raw errors of a good autoencoder have variances of
  1e-5..1e-4, so 0.005 * sum 1/Sigma_jj was ~1e7 and the network learnt to reconstruct WORSE
  to inflate them (measured: reconstruction MSE 1.0 -> 2.7 on TwoLeadECG); logs are
  scale-free and closer to Gaussian.
- z is batch-normalised without affine parameters (``standardise_z``; running statistics
  when scoring) before the estimation network and the mixture. Without it the energy falls
  by shrinking z and the penalty by inflating it, a scale game unrelated to anomalies. An
  affine map of z changes every energy by the same constant, so rankings are unaffected.
- Warm-up (``warmup_fraction``, as the paper's pre-trained DAGMM-p): the first 30% of the
  epochs train the autoencoder alone. Joint training from scratch kept the LSTM decoder at
  its "predict the mean" plateau (MSE 1.0) on the small UCR sets.
- Small training sets: an epoch has at least ``min_steps_per_epoch`` gradient steps (several
  shuffled passes), so 10-50 windows still get hundreds of steps; batches are near-equal
  splits of a pass (no tiny last batch for the per-batch mixture).
- The decoder also gets the relative time as input (``decoder_time_input``): a constant code
  alone leaves the LSTM to count time steps itself, which it does badly for L ~ 100.
- Inputs are standardised per feature with training statistics; model selection by the loss on
  held-out training windows (their energies under the mixture fitted to the training share's
  z at that epoch); the final mixture is fitted to the training share only, so the validation
  windows' scores (the threshold reference) stay out-of-sample. The reference has no
  validation split and keeps the last epoch.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

import numpy as np
import torch
from torch import nn

from model.base import CalibratedDetector, module_tensors
from model.detectors.dagmm.config import TSDAGMMConfig
from model.detectors.dagmm.mixture import batch_mixture, feature_floor, mixture_energy
from model.detectors.dagmm.network import TSDAGMM
from model.errors import DataError
from model.fitting import (
    as_windows,
    held_out_split,
    input_standardisation,
    pad_windows,
    seeded,
)
from model.gmm import safe_cholesky

EpochCallback = Callable[[int, dict[str, float]], None]

MIN_LENGTH = 2  # the trend error needs one first difference
SCORE_CHUNK = 256  # windows per forward pass when scoring
_MODEL = "model."  # checkpoint tensor prefix


class TSDAGMMDetector(CalibratedDetector[TSDAGMM]):
    """TS-DAGMM anomaly detector (kind "dagmm"); see the module docstring."""

    kind = "dagmm"
    config_class = TSDAGMMConfig

    def __init__(
        self, config: TSDAGMMConfig | None = None, *, device: str | torch.device = "cpu"
    ) -> None:
        super().__init__(device=device)
        self.config = config if config is not None else TSDAGMMConfig()

    # ------------------------------------------------------------------ training
    def fit(
        self,
        windows: Sequence[np.ndarray],
        *,
        seed: int = 0,
        progress: bool = False,
        on_epoch: EpochCallback | None = None,
    ) -> Self:
        """Train on normal windows (shape (L,) or (L, F) each). Deterministic per seed and device.

        ``progress`` is accepted for the Detector protocol; model code never prints, pass
        ``on_epoch(epoch, metrics)`` to observe training.
        """
        del progress
        cfg = self.config
        t0 = time.perf_counter()
        wins = as_windows(windows, who="TS-DAGMM", min_length=MIN_LENGTH)
        n, n_features = len(wins), wins[0].shape[1]
        lengths_np = np.array([w.shape[0] for w in wins])
        train_idx, val_idx = self._held_out(n, seed)
        n_val = val_idx.size
        x_all, len_all = pad_windows(wins)
        with seeded(seed, self.device):
            net = TSDAGMM(cfg, n_features)
            if cfg.normalise_input:
                mean, std = input_standardisation([wins[i] for i in train_idx])
                net.set_normalisation(mean, std)
            net.to(self.device)
            history, best_epoch, epochs_run, stopped = self._train(
                net, x_all, len_all, train_idx, val_idx, seed, on_epoch
            )
            net.double()  # scoring in float64: batch-independent to round-off, see docstring
            self._fit_mixture(net, x_all[train_idx], len_all[train_idx])
        net.eval()
        self.model = net
        self.n_features = n_features
        self.window_length = int(lengths_np[0]) if np.all(lengths_np == lengths_np[0]) else None
        self.seed = seed
        self.history = history

        scores = self._energies(x_all, len_all)
        reference = scores[val_idx] if n_val else scores[train_idx]
        self.calibrate(scores, reference)
        if cfg.threshold_fpr is not None:
            self.infer_threshold(fpr=cfg.threshold_fpr)
        train_seconds = time.perf_counter() - t0
        self.training_summary = {
            "n_windows": n,
            "n_train_windows": len(train_idx),
            "n_validation_windows": int(n_val),
            "window_length_min": int(lengths_np.min()),
            "window_length_max": int(lengths_np.max()),
            "n_features": n_features,
            "seed": seed,
            "device": str(self.device),
            "epochs_run": epochs_run,
            "warmup_epochs": cfg.warmup_epochs,
            "best_epoch": best_epoch,
            "stopped_early": stopped,
            "train_seconds": train_seconds,
            "fit_seconds": train_seconds,
            "train_score_mean": float(scores.mean()),
            "train_score_std": float(scores.std()),
            "mixture_log_weights": [float(v) for v in net.mixture.log_weights.cpu()],
        }
        return self

    def _held_out(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(training, held-out) window indices: held-out normals from the training windows
        (seeded, :func:`held_out_split`), never from test data; at least 2 to train on."""
        fraction = self.config.validation_fraction
        if n < 2:
            raise DataError(
                f"TS-DAGMM needs at least 2 training windows (got {n}): its mixture is"
                " estimated from batches of windows"
            )
        train_idx, val_idx = held_out_split(n, fraction, seed)
        if train_idx.size < 2:
            raise DataError(
                f"validation_fraction {fraction} leaves {train_idx.size} of {n} windows to train"
                " on; TS-DAGMM needs 2: lower validation_fraction"
            )
        return train_idx, val_idx

    def _batch_loss(
        self, net: TSDAGMM, x: torch.Tensor, lengths: torch.Tensor, joint: bool
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """DAGMM loss of one mini-batch with its own gamma-weighted mixture (``joint``), or the
        reconstruction alone (warm-up; energy and penalty are still reported)."""
        cfg = self.config
        out = net(x, lengths)
        recon = net.recon_mse(x, out.recon, lengths).mean()
        z = out.z.to(torch.float64)
        gamma = out.log_gamma.to(torch.float64).exp()
        floor = feature_floor(z, cfg.cov_floor, cfg.cov_floor_relative)
        log_phi, mu, cov = batch_mixture(z, gamma, floor)
        chol = safe_cholesky(cov)
        energy = mixture_energy(z, log_phi, mu, chol).mean()
        cov_pen = (1.0 / torch.diagonal(cov, dim1=-2, dim2=-1)).sum()
        loss = recon + cfg.lambda_energy * energy + cfg.lambda_cov * cov_pen if joint else recon
        parts = {
            "recon": float(recon.detach()),
            "energy": float(energy.detach()),
            "cov_penalty": float(cov_pen.detach()),
        }
        return loss, parts

    def _train(
        self,
        net: TSDAGMM,
        x_all: torch.Tensor,
        len_all: torch.Tensor,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        seed: int,
        on_epoch: EpochCallback | None,
    ) -> tuple[list[dict[str, float]], int, int, bool]:
        cfg = self.config
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(seed)
        n_train = len(train_idx)
        n_batches = max(1, -(-n_train // cfg.batch_size))
        passes = max(1, -(-cfg.min_steps_per_epoch // n_batches))  # small sets: several passes
        train_t = torch.as_tensor(train_idx)
        history: list[dict[str, float]] = []
        best_val, best_epoch, best_state, since_best = math.inf, 0, None, 0
        epochs_run, stopped = 0, False
        warmup = cfg.warmup_epochs
        for epoch in range(1, cfg.epochs + 1):
            joint = epoch > warmup
            net.train()
            sums = {"loss": 0.0, "recon": 0.0, "energy": 0.0, "cov_penalty": 0.0}
            batches = [
                b
                for _ in range(passes)
                for b in torch.tensor_split(  # near-equal batch sizes
                    train_t[torch.randperm(n_train, generator=gen)], n_batches
                )
            ]
            for idx in batches:
                lengths = len_all[idx]
                x = x_all[idx, : int(lengths.max())].to(self.device, torch.float32)
                loss, parts = self._batch_loss(net, x, lengths.to(self.device), joint)
                opt.zero_grad()
                loss.backward()
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                opt.step()
                w = idx.numel() / (n_train * passes)
                sums["loss"] += float(loss.detach()) * w
                for k, v in parts.items():
                    sums[k] += v * w
            epochs_run = epoch
            record: dict[str, float] = {"epoch": float(epoch), **sums}
            if len(val_idx) and joint:
                record.update(self._validation_loss(net, x_all, len_all, train_idx, val_idx))
                if record["val_loss"] < best_val:
                    best_val, best_epoch, since_best = record["val_loss"], epoch, 0
                    best_state = copy.deepcopy(net.state_dict())
                else:
                    since_best += 1
            history.append(record)
            if on_epoch is not None:
                on_epoch(epoch, {k: v for k, v in record.items() if k != "epoch"})
            if not math.isfinite(record["loss"]):
                raise DataError(
                    f"TS-DAGMM training diverged at epoch {epoch} (loss {record['loss']});"
                    " lower lr or raise cov_floor_relative"
                )
            if cfg.patience is not None and len(val_idx) and since_best >= cfg.patience:
                stopped = True
                break
        if best_state is not None:
            net.load_state_dict(best_state)
        else:
            best_epoch = epochs_run
        return history, best_epoch, epochs_run, stopped

    @torch.no_grad()
    def _features(
        self, net: TSDAGMM, x_all: torch.Tensor, len_all: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (N, D) float64, log gamma (N, K) float64, recon MSE (N,) in eval mode, chunked.

        Runs in the network's dtype: float32 while training, float64 once fitted.
        """
        net.eval()
        dtype = net.input_mean.dtype
        zs, gs, rs = [], [], []
        for a in range(0, x_all.shape[0], SCORE_CHUNK):
            lengths = len_all[a : a + SCORE_CHUNK]
            x = x_all[a : a + SCORE_CHUNK, : int(lengths.max())].to(self.device, dtype)
            lengths = lengths.to(self.device)
            out = net(x, lengths)
            zs.append(out.z.to(torch.float64))
            gs.append(out.log_gamma.to(torch.float64))
            rs.append(net.recon_mse(x, out.recon, lengths).to(torch.float64))
        return torch.cat(zs), torch.cat(gs), torch.cat(rs)

    def _mixture_params(
        self, net: TSDAGMM, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """log phi, mu, floored Sigma (float64) and the floor, from the windows' z and gammas."""
        z, log_gamma, _ = self._features(net, x, lengths)
        floor = feature_floor(z, self.config.cov_floor, self.config.cov_floor_relative)
        log_phi, mu, cov = batch_mixture(z, log_gamma.exp(), floor, project=True)
        return log_phi, mu, cov, floor

    def _fit_mixture(self, net: TSDAGMM, x: torch.Tensor, lengths: torch.Tensor) -> None:
        log_phi, mu, cov, floor = self._mixture_params(net, x, lengths)
        net.mixture.set_parameters(log_phi, mu, cov, floor.expand_as(mu))

    def _validation_loss(
        self,
        net: TSDAGMM,
        x_all: torch.Tensor,
        len_all: torch.Tensor,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
    ) -> dict[str, float]:
        """The loss on held-out windows: their energy under the mixture of the training share."""
        cfg = self.config
        log_phi, mu, cov, _ = self._mixture_params(net, x_all[train_idx], len_all[train_idx])
        z, _, recon = self._features(net, x_all[val_idx], len_all[val_idx])
        energy = mixture_energy(z, log_phi, mu, safe_cholesky(cov)).mean()
        cov_pen = (1.0 / torch.diagonal(cov, dim1=-2, dim2=-1)).sum()
        loss = recon.mean() + cfg.lambda_energy * energy + cfg.lambda_cov * cov_pen
        return {
            "val_loss": float(loss),
            "val_recon": float(recon.mean()),
            "val_energy": float(energy),
        }

    # ------------------------------------------------------------------ scoring
    def _energies(self, x_all: torch.Tensor, len_all: torch.Tensor) -> np.ndarray:
        net = self._require_model()
        z, _, _ = self._features(net, x_all, len_all)
        with torch.no_grad():
            return net.mixture.energy(z).cpu().numpy().astype(np.float64)

    def _check_windows(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        self._require_model()
        return as_windows(
            windows, who="TS-DAGMM", n_features=self.n_features, min_length=MIN_LENGTH
        )

    def features(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) float64 z = [z_c, reconstruction features] of each window (no gradient)."""
        net = self._require_model()
        x, lengths = pad_windows(self._check_windows(windows))
        with torch.inference_mode():
            z, _, _ = self._features(net, x, lengths)
        return z.cpu().numpy()

    def score(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) float64 energies under the fitted mixture, higher = more anomalous."""
        wins = self._check_windows(windows)
        x, lengths = pad_windows(wins)
        with torch.inference_mode():
            return self._energies(x, lengths)

    def reconstruct(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each window's reconstruction (L, F) in input units."""
        wins = self._check_windows(windows)
        net = self._require_model()
        net.eval()
        x, lengths = pad_windows(wins)
        with torch.inference_mode():
            out = net(x.to(self.device, net.input_mean.dtype), lengths.to(self.device))
            rec = (out.recon * net.input_std + net.input_mean).to(torch.float64).cpu().numpy()
        return [rec[i, : w.shape[0]] for i, w in enumerate(wins)]

    # ------------------------------------------------------------------ checkpoint hooks
    def checkpoint_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return module_tensors(_MODEL, self._require_model())

    def checkpoint_metadata(self) -> dict[str, Any]:
        net = self._require_model()
        return {
            "normalisation": net.normalisation_metadata(),
        }

    def restore(self, tensors: Mapping[str, torch.Tensor], n_features: int) -> None:
        net = TSDAGMM(self.config, n_features).double()
        self.model = self._restore_network(_MODEL, net, tensors, n_features)
