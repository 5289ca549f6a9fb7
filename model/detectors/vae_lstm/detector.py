"""VAE-LSTM (Lin, Clark, Birke, Schönborn, Trigoni, Roberts, ICASSP 2020) behind the Detector
protocol (kind "vae-lstm").

    det = VAELSTMDetector(VAELSTMConfig()).fit(train_windows, seed=0)   # windows (576,) or (576, F)
    scores = det.score(test_windows)        # (N,) float64, higher = more anomalous

The model. A window of L samples is cut into ``n_subwindows`` non-overlapping sub-windows of
``subwindow_length`` samples (the reference: 12 x 48 = 576). A convolutional VAE encodes each
sub-window into a ``code_dim``-dimensional Gaussian code (reference: 6). A stack of LSTMs
(reference: 64, 64 and a last LSTM of 6 units) reads the codes of sub-windows 1..n-1 and
predicts the codes of sub-windows 2..n. The VAE decodes the predicted codes, and the anomaly
score of the window is the sum of squared errors between the decoded predictions and the true
sub-windows 2..n (11 x 48 = 528 samples per feature in the reference), in float64.

Training has two stages, as in the reference: first the VAE alone (negative ELBO on the
sub-windows), then the LSTM on the frozen VAE's codes (MSE between the predicted and the true
codes). The codes are the posterior means. Scoring uses no sampling: it encodes with the
posterior mean in eval mode, and no layer depends on the batch. A window's score is the same
whatever else is in its batch, up to float32 rounding in the convolutions.

Where we differ from the reference (TensorFlow 1.x code of the paper):

- Input: each feature is standardised with the mean/std of the training windows (stored in the
  checkpoint). The reference normalises the series beforehand;
  :mod:`model.evaluation.series` does so too, which makes this step almost the identity on NAB.
- Window length: a window longer than ``n_subwindows * subwindow_length`` loses its remainder
  at the START, because the most recent samples matter in a stream. With ``subwindow_length =
  None`` the sub-window length is ``L // n_subwindows`` of the shortest training window; for
  example a UCR row of 82 samples gives 12 sub-windows of 6 and drops its first 10 samples. fit
  then stores the resolved length in ``config``. The reference only has 24/48/144-sample
  sub-windows with hand-written layer shapes. Ours are generic: stride-2 convolutions (kernel 3)
  down to ``ceil(s / 2**k)`` samples and a dense layer. The decoder mirrors this with
  nearest-neighbour upsampling and convolutions. The reference uses ``depth_to_space``.
- Size: the default widths (conv 16/32/64, dense 128; about 120k VAE parameters against the
  reference's 1.08M: conv 32/64/128/512, dense 512) and mini-batches of 64 (reference 32) keep
  a full machine_temp fit (9925 hop-1 windows, 20 + 20 epochs) at about one minute on one
  CPU core (49-61 s measured on a loaded 2-core box). At these sizes the paper's machine_temp
  evaluation gives best F1 0.711 +- 0.002 over 3 seeds (reference notebook: 0.675; see
  docs/benchmarks.md). Gradients are clipped at norm 10.
- ELBO: loss = sum of squared errors + ``beta`` * KL(q(z|x) || N(0, I)) per sub-window. The
  reference uses a Gaussian likelihood with a fixed sigma = 0.1, i.e. SSE / (2 sigma^2) + KL,
  which is the same objective up to scale with beta = 2 sigma^2 = 0.02 (our default). The
  posterior std is ``softplus(.) + min_std``. The reference uses ``relu(.) + 1e-2``, whose
  units can die.
- VAE training set: the distinct sub-windows of the training windows. With the usual hop-1
  training windows these are the reference's rolling 48-sample windows, each counted once
  (less the few that occur only in held-out windows). LSTM training set: one code sequence
  per training window, again the reference's set for hop-1 windows.
- Validation: a seeded share of the training windows (``validation_fraction``, never test
  data) is held out of both stages. It drives early stopping (``patience``; the best epoch is
  kept), and its window scores are the reference for :meth:`infer_threshold`. With
  overlapping windows the held-out windows share samples with the training ones, so the
  threshold is somewhat optimistic. The reference trained for fixed epochs and chose its
  threshold on the test-score histogram.
- ``lstm_readout = "lstm"`` (default, as in the reference) makes the last layer an LSTM with
  ``code_dim`` units, whose tanh output cannot reach codes beyond +-1. ``"linear"`` uses a
  linear read-out from the last hidden LSTM layer instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Self

import numpy as np
import torch
from torch import nn

from model.base import CalibratedDetector, module_tensors
from model.detectors.vae_lstm.config import VAELSTMConfig
from model.detectors.vae_lstm.network import VAELSTM, kl_divergence
from model.errors import CheckpointError, DataError
from model.fitting import as_windows, held_out_split, input_standardisation, seeded

_MODEL = "model."  # checkpoint tensor prefix
SCORE_CHUNK = 512  # windows per forward pass when scoring


class VAELSTMDetector(CalibratedDetector[VAELSTM]):
    """VAE-LSTM anomaly detector (kind "vae-lstm"); see the module docstring."""

    kind = "vae-lstm"
    config_class = VAELSTMConfig

    def __init__(
        self, config: VAELSTMConfig | None = None, *, device: str | torch.device = "cpu"
    ) -> None:
        super().__init__(device=device)
        self.config = config if config is not None else VAELSTMConfig()
        self._n_vae_subwindows = 0
        # fit() writes the resolved length into config; remember that it was "auto"
        self._auto_subwindow = self.config.subwindow_length is None

    @property
    def span(self) -> int:
        """Samples used per window: n_subwindows * subwindow_length (the most recent ones)."""
        s = self.config.subwindow_length
        if s is None:
            raise DataError("the sub-window length is resolved by fit(); fit the detector first")
        return self.config.n_subwindows * s

    def _resolve_subwindow(self, min_length: int) -> int:
        n = self.config.n_subwindows
        s = None if self._auto_subwindow else self.config.subwindow_length
        if s is None:
            s = min_length // n
            if s < 1:
                raise DataError(
                    f"windows of {min_length} samples are too short for {n} sub-windows; use"
                    f" windows of at least {n} samples or fewer sub-windows (n_subwindows)"
                )
        if min_length < n * s:
            raise DataError(
                f"VAE-LSTM needs windows of at least n_subwindows * subwindow_length ="
                f" {n} * {s} = {n * s} samples, the shortest has {min_length}; cut longer"
                " windows or set subwindow_length = null (auto)"
            )
        return s

    def _tail(self, wins: list[np.ndarray]) -> np.ndarray:
        """(N, n*s, F) float64: the last n*s samples of each window."""
        span = self.span
        short = [i for i, w in enumerate(wins) if w.shape[0] < span]
        if short:
            raise DataError(
                f"window {short[0]} has {wins[short[0]].shape[0]} samples; this VAE-LSTM needs"
                f" at least {span} (n_subwindows * subwindow_length)"
            )
        return np.stack([w[w.shape[0] - span :] for w in wins])

    # ------------------------------------------------------------------ training
    def fit(
        self, windows: Sequence[np.ndarray] | np.ndarray, *, seed: int = 0, progress: bool = False
    ) -> Self:
        """Train the VAE, then the LSTM, on normal windows. Deterministic per seed and device."""
        del progress  # model code never prints
        t0 = time.perf_counter()
        cfg = self.config
        wins = as_windows(windows, who="the VAE-LSTM")
        lengths = np.array([w.shape[0] for w in wins])
        s = self._resolve_subwindow(int(lengths.min()))
        cfg = self.config = replace(cfg, subwindow_length=s)
        X = self._tail(wins)  # (N, n*s, F)
        N, _, n_features = X.shape

        train_idx, val_idx = held_out_split(N, cfg.validation_fraction, seed)
        n_val = val_idx.size

        with seeded(seed, self.device):
            net = VAELSTM(cfg, n_features, s)
            if cfg.normalise_input:
                mean, std = input_standardisation(list(X[train_idx]))
                net.set_normalisation(mean, std)
            net.to(self.device)
            gen = torch.Generator().manual_seed(seed)
            Xt = torch.as_tensor(X, device=self.device)
            with torch.no_grad():
                subs = net.standardise(Xt)  # (N, n, s, F) float64
            t_vae = time.perf_counter()
            vae_hist, vae_best = self._train_vae(net, subs, train_idx, val_idx, gen)
            t_lstm = time.perf_counter()
            lstm_hist, lstm_best = self._train_lstm(net, subs, train_idx, val_idx, gen)
            t_end = time.perf_counter()
        net.eval()
        self.model = net
        offset = len(vae_hist)
        for row in lstm_hist:
            row["epoch"] += offset
        self.history = vae_hist + lstm_hist
        self.n_features = n_features
        self.window_length = int(lengths[0]) if np.all(lengths == lengths[0]) else None
        self.seed = seed

        train_seconds = time.perf_counter() - t0
        scores = self._score_array(X)
        ref = scores[val_idx] if n_val else scores[train_idx]
        self.calibrate(scores[train_idx], ref)
        if cfg.threshold_fpr is not None:
            self.infer_threshold(fpr=cfg.threshold_fpr)
        self.training_summary = {
            "n_windows": N,
            "n_train_windows": len(train_idx),
            "n_validation_windows": int(n_val),
            "n_features": n_features,
            "window_length_min": int(lengths.min()),
            "window_length_max": int(lengths.max()),
            "subwindow_length": s,
            "samples_dropped_at_start": int(lengths.min() - self.span),
            "n_vae_subwindows": self._n_vae_subwindows,
            "seed": seed,
            "device": str(self.device),
            "vae_epochs_run": len(vae_hist),
            "vae_best_epoch": vae_best,
            "lstm_epochs_run": len(lstm_hist),
            "lstm_best_epoch": lstm_best,
            "epochs_run": len(self.history),
            "best_epoch": offset + lstm_best,
            "vae_seconds": t_lstm - t_vae,
            "lstm_seconds": t_end - t_lstm,
            "train_seconds": train_seconds,
            "calibration_seconds": time.perf_counter() - t0 - train_seconds,
            "fit_seconds": time.perf_counter() - t0,
            "train_score_mean": float(scores[train_idx].mean()),
            "train_score_std": float(scores[train_idx].std()),
        }
        return self

    def _train_vae(
        self,
        net: VAELSTM,
        subs: torch.Tensor,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        gen: torch.Generator,
    ) -> tuple[list[dict[str, float]], int]:
        cfg = self.config
        nf = subs.shape[3]

        def distinct(idx: np.ndarray) -> torch.Tensor:
            """The distinct sub-windows of windows ``idx`` as (M, s, F) float32."""
            flat = subs[torch.as_tensor(idx, device=subs.device)].reshape(-1, net.s * nf)
            uniq = np.unique(flat.cpu().numpy(), axis=0)
            return torch.as_tensor(uniq, device=subs.device).view(-1, net.s, nf).float()

        train = distinct(train_idx)
        val = distinct(val_idx) if val_idx.size else None
        self._n_vae_subwindows = int(train.shape[0])
        params = [*net.encoder.parameters(), *net.decoder.parameters()]
        opt = torch.optim.Adam(params, lr=cfg.vae_lr)

        def loss_of(x: torch.Tensor, sample: bool) -> torch.Tensor:
            mean, std = net.encoder(x)
            z = mean + std * torch.randn_like(mean) if sample else mean
            sse = ((net.decoder(z) - x) ** 2).sum(dim=(1, 2))
            return (sse + cfg.beta * kl_divergence(mean, std)).mean()

        def evaluate(x: torch.Tensor) -> float:
            net.eval()
            with torch.no_grad():
                total = sum(
                    float(loss_of(c, sample=False)) * c.shape[0] for c in torch.split(x, 4096)
                )
            return total / x.shape[0]

        return self._epochs(
            "vae", params, opt, cfg.vae_epochs, train.shape[0], gen,
            lambda idx: loss_of(train[idx], sample=True),
            (lambda: evaluate(val)) if val is not None else None,
            [net.encoder, net.decoder],
        )  # fmt: skip

    def _train_lstm(
        self,
        net: VAELSTM,
        subs: torch.Tensor,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        gen: torch.Generator,
    ) -> tuple[list[dict[str, float]], int]:
        cfg = self.config
        net.encoder.eval()
        with torch.no_grad():
            codes = torch.cat([net.codes(c) for c in torch.split(subs, 2048)])  # (N, n, D)
        dev = subs.device
        train = codes[torch.as_tensor(train_idx, device=dev)]
        val = codes[torch.as_tensor(val_idx, device=dev)] if val_idx.size else None
        params = list(net.predictor.parameters())
        opt = torch.optim.Adam(params, lr=cfg.lstm_lr)

        def loss_of(c: torch.Tensor) -> torch.Tensor:
            return ((net.predictor(c[:, :-1]) - c[:, 1:]) ** 2).mean()

        def evaluate(c: torch.Tensor) -> float:
            net.predictor.eval()
            with torch.no_grad():
                total = sum(float(loss_of(b)) * b.shape[0] for b in torch.split(c, 4096))
            return total / c.shape[0]

        return self._epochs(
            "lstm", params, opt, cfg.lstm_epochs, train.shape[0], gen,
            lambda idx: loss_of(train[idx]),
            (lambda: evaluate(val)) if val is not None else None,
            [net.predictor],
        )  # fmt: skip

    def _epochs(
        self,
        stage: str,
        params: list[nn.Parameter],
        opt: torch.optim.Optimizer,
        epochs: int,
        n: int,
        gen: torch.Generator,
        batch_loss: Any,
        val_loss: Any,
        modules: list[nn.Module],
    ) -> tuple[list[dict[str, float]], int]:
        """Mini-batch epochs with early stopping on ``val_loss``; the best state is restored.

        Returns the per-epoch history and the best (1-based) epoch of this stage.
        """
        cfg = self.config
        history: list[dict[str, float]] = []
        best, best_epoch, best_state, waited = math.inf, epochs, None, 0
        for epoch in range(1, epochs + 1):
            for m in modules:
                m.train()
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for a in range(0, n, cfg.batch_size):
                idx = order[a : a + cfg.batch_size]
                loss = batch_loss(idx)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(params, 10.0)
                opt.step()
                total += float(loss.detach()) * idx.numel()
            row = {"epoch": float(epoch), f"{stage}_loss": total / n}
            if val_loss is not None:
                v = float(val_loss())
                row[f"val_{stage}_loss"] = v
                if v < best:
                    best, best_epoch, waited = v, epoch, 0
                    best_state = [
                        {k: t.detach().clone() for k, t in m.state_dict().items()} for m in modules
                    ]
                else:
                    waited += 1
            history.append(row)
            if cfg.patience is not None and val_loss is not None and waited >= cfg.patience:
                break
        if best_state is not None:
            for m, state in zip(modules, best_state, strict=True):
                m.load_state_dict(state)
        else:
            best_epoch = len(history)
        for m in modules:
            m.eval()
        return history, best_epoch

    # ------------------------------------------------------------------ scoring
    def _score_array(self, X: np.ndarray) -> np.ndarray:
        net = self.model
        assert net is not None
        net.eval()
        out = []
        with torch.inference_mode():
            for a in range(0, X.shape[0], SCORE_CHUNK):
                x = torch.as_tensor(X[a : a + SCORE_CHUNK], device=self.device)
                out.append(net.window_errors(x).cpu())
        return torch.cat(out).numpy().astype(np.float64)

    def score(self, windows: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """(N,) float64 window scores (SSE of the decoded predicted sub-windows 2..n)."""
        self._require_fitted()
        wins = as_windows(windows, who="the VAE-LSTM", n_features=self.n_features)
        return self._score_array(self._tail(wins))

    # ------------------------------------------------------------------ checkpoint hooks
    def checkpoint_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        self._require_fitted()
        assert self.model is not None
        return module_tensors(_MODEL, self.model)

    def checkpoint_metadata(self) -> dict[str, Any]:
        assert self.model is not None
        return {
            "span": self.span,
            "normalisation": self.model.normalisation_metadata(),
        }

    def restore(self, tensors: Mapping[str, torch.Tensor], n_features: int) -> None:
        cfg = self.config
        if cfg.subwindow_length is None:
            raise CheckpointError("checkpoint config lacks the resolved subwindow_length")
        net = VAELSTM(cfg, n_features, cfg.subwindow_length)
        self.model = self._restore_network(_MODEL, net, tensors, n_features)
