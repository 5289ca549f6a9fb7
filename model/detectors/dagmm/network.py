"""The TS-DAGMM network: BiLSTM encoder, repeated-code LSTM decoder, estimation MLP and the
fitted mixture (buffers).

Shapes: B windows padded to T samples with F features, D the width of z, K components.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from model.detectors.dagmm.config import TSDAGMMConfig
from model.detectors.dagmm.features import lengths_mask, reconstruction_features
from model.fitting import StandardisedNetwork
from model.gmm import GaussianMixture


@dataclass
class _Forward:
    recon: torch.Tensor  # (B, T, F)
    z: torch.Tensor  # (B, D), in the network dtype
    log_gamma: torch.Tensor  # (B, K)


class TSDAGMM(StandardisedNetwork):
    """BiLSTM encoder, repeated-code LSTM decoder, estimation MLP, fitted mixture (buffers)."""

    def __init__(self, cfg: TSDAGMMConfig, n_features: int) -> None:
        super().__init__(n_features)
        self.cfg = cfg
        h, layers = cfg.hidden_size, cfg.num_layers
        self.encoder = nn.LSTM(
            n_features, h, num_layers=layers, batch_first=True, bidirectional=True
        )
        self.to_code = nn.Linear(2 * h, cfg.latent_dim)
        dec_in = cfg.latent_dim + (1 if cfg.decoder_time_input else 0)
        self.decoder = nn.LSTM(dec_in, h, num_layers=layers, batch_first=True)
        self.readout = nn.Linear(h, n_features)
        self.estimator = nn.Sequential(
            nn.Linear(cfg.z_dim, cfg.estimator_hidden),
            nn.Tanh(),
            nn.Dropout(cfg.estimator_dropout),
            nn.Linear(cfg.estimator_hidden, cfg.n_components),
        )
        # (B, D) -> (B, D); the running statistics make scoring batch-independent
        self.z_norm = (
            nn.BatchNorm1d(cfg.z_dim, affine=False) if cfg.standardise_z else nn.Identity()
        )
        self.mixture = GaussianMixture(cfg.n_components, cfg.z_dim, covariance="full")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> _Forward:
        """x (B, T, F) raw values zero-padded after lengths (B,) -> reconstruction, z, gamma."""
        b, t, _ = x.shape
        mask = lengths_mask(lengths, t)[:, :, None]  # (B, T, 1)
        x = ((x - self.input_mean) / self.input_std) * mask  # normalised, padding = 0
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.encoder(packed)  # (layers * 2, B, H): states at each true end
        code = self.to_code(torch.cat([h_n[-2], h_n[-1]], dim=1))  # (B, latent)
        dec_in = code[:, None, :].expand(b, t, code.shape[1])  # (B, T, latent)
        if self.cfg.decoder_time_input:
            steps = torch.arange(t, device=x.device, dtype=x.dtype)[None, :]  # (1, T)
            span = (lengths.to(x.dtype) - 1.0).clamp_min(1.0)[:, None]  # (B, 1)
            phase = (steps / span).clamp_max(1.0)  # (B, T): 0..1 over the true samples
            dec_in = torch.cat([dec_in, phase[:, :, None]], dim=2)
        out, _ = self.decoder(dec_in)  # causal: padding steps never reach true ones
        recon = self.readout(out)  # (B, T, F)
        feats = reconstruction_features(
            x,
            recon,
            lengths,
            self.cfg.recon_features,
            band=self.cfg.align_band,
            eps=self.cfg.recon_eps,
            log_errors=self.cfg.log_errors,
            error_eps=self.cfg.error_eps,
        )
        z = self.z_norm(torch.cat([code, feats], dim=1))  # (B, D)
        log_gamma = torch.log_softmax(self.estimator(z), dim=1)  # (B, K)
        return _Forward(recon=recon, z=z, log_gamma=log_gamma)

    def recon_mse(
        self, x: torch.Tensor, recon: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """(B,) mean squared error per window over true samples, in normalised units."""
        t = x.shape[1]
        mask = lengths_mask(lengths, t)[:, :, None].to(x.dtype)
        xn = (x - self.input_mean) / self.input_std
        sq = ((recon - xn) ** 2 * mask).sum((1, 2))
        return sq / (lengths.to(x.dtype) * x.shape[2])
