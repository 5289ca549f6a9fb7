"""The VAE-LSTM networks: a convolutional VAE of sub-windows and an LSTM that predicts the next
sub-window's code.

Shapes: B windows of n sub-windows of s samples with F features, M sub-windows in a batch,
D the code size, C conv channels.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from model.detectors.vae_lstm.config import VAELSTMConfig
from model.fitting import StandardisedNetwork


def _conv_lengths(length: int, n_convs: int) -> list[int]:
    """Sub-window length after each stride-2 conv (kernel 3, padding 1): ceil(L / 2)."""
    out = [length]
    for _ in range(n_convs):
        out.append((out[-1] + 1) // 2)
    return out


class _Encoder(nn.Module):
    """(M, s, F) sub-windows -> posterior mean and std (M, D)."""

    def __init__(self, cfg: VAELSTMConfig, n_features: int, length: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = n_features
        for c in cfg.conv_channels:
            layers += [nn.Conv1d(c_in, c, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_in = c
        self.conv = nn.Sequential(*layers)
        flat = c_in * _conv_lengths(length, len(cfg.conv_channels))[-1]
        self.top = nn.Sequential(
            nn.Linear(flat, cfg.hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(cfg.hidden, 4 * cfg.code_dim),
            nn.LeakyReLU(0.2),
        )
        self.mean = nn.Linear(4 * cfg.code_dim, cfg.code_dim)
        self.std = nn.Linear(4 * cfg.code_dim, cfg.code_dim)
        self.min_std = cfg.min_std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(x.transpose(1, 2))  # (M, C, s')
        h = self.top(h.flatten(1))  # (M, 4D)
        return self.mean(h), F.softplus(self.std(h)) + self.min_std


class _Decoder(nn.Module):
    """(M, D) codes -> (M, s, F) sub-windows; mirrors the encoder with upsampling + convs."""

    def __init__(self, cfg: VAELSTMConfig, n_features: int, length: int) -> None:
        super().__init__()
        ch = list(cfg.conv_channels)
        self.lengths = _conv_lengths(length, len(ch))  # [s, s/2, ..., s']
        self.top_shape = (ch[-1], self.lengths[-1])
        self.fc = nn.Sequential(
            nn.Linear(cfg.code_dim, cfg.hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(cfg.hidden, ch[-1] * self.lengths[-1]),
            nn.LeakyReLU(0.2),
        )
        # conv i runs at length lengths[i] (after upsampling), from ch[i] to ch[i - 1] channels
        self.convs = nn.ModuleList(
            nn.Conv1d(ch[i], ch[max(i - 1, 0)], 3, padding=1) for i in reversed(range(len(ch)))
        )
        self.out = nn.Conv1d(ch[0], n_features, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], *self.top_shape)  # (M, C, s')
        for conv, size in zip(self.convs, reversed(self.lengths[:-1]), strict=True):
            h = F.leaky_relu(conv(F.interpolate(h, size=size, mode="nearest")), 0.2)
        return self.out(h).transpose(1, 2)  # (M, s, F)


class _CodePredictor(nn.Module):
    """(B, T, D) codes -> (B, T, D) predictions of the next code at every step."""

    def __init__(self, cfg: VAELSTMConfig) -> None:
        super().__init__()
        sizes = [cfg.code_dim, *cfg.lstm_sizes]
        self.lstms = nn.ModuleList(
            nn.LSTM(a, b, batch_first=True) for a, b in itertools.pairwise(sizes)
        )
        self.readout: nn.Module
        if cfg.lstm_readout == "lstm":
            self.readout = nn.LSTM(sizes[-1], cfg.code_dim, batch_first=True)
        else:
            self.readout = nn.Linear(sizes[-1], cfg.code_dim)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        h = codes
        for lstm in self.lstms:
            h, _ = lstm(h)
        if isinstance(self.readout, nn.LSTM):
            out, _ = self.readout(h)
            return out
        out_lin: torch.Tensor = self.readout(h)
        return out_lin


class VAELSTM(StandardisedNetwork):
    """VAE + code predictor; input standardisation as buffers (part of the checkpoint)."""

    def __init__(self, cfg: VAELSTMConfig, n_features: int, subwindow_length: int) -> None:
        super().__init__(n_features, torch.float64)
        self.n = cfg.n_subwindows
        self.s = subwindow_length
        self.encoder = _Encoder(cfg, n_features, subwindow_length)
        self.decoder = _Decoder(cfg, n_features, subwindow_length)
        self.predictor = _CodePredictor(cfg)

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n*s, F) float64 raw -> (B, n, s, F) float64 standardised sub-windows."""
        z = (x - self.input_mean) / self.input_std
        return z.view(x.shape[0], self.n, self.s, x.shape[2])

    def codes(self, sub: torch.Tensor) -> torch.Tensor:
        """(B, n, s, F) sub-windows -> (B, n, D) posterior means."""
        B = sub.shape[0]
        mean, _ = self.encoder(sub.reshape(B * self.n, self.s, sub.shape[3]).float())
        return mean.view(B, self.n, -1)

    def window_errors(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n*s, F) float64 windows -> (B,) float64 SSE of decoded predictions 2..n."""
        sub = self.standardise(x)  # (B, n, s, F)
        B, n, s, nf = sub.shape
        pred = self.predictor(self.codes(sub)[:, :-1])  # (B, n-1, D)
        recon = self.decoder(pred.reshape(B * (n - 1), -1)).view(B, n - 1, s, nf)
        return ((recon.double() - sub[:, 1:]) ** 2).sum(dim=(1, 2, 3))


def kl_divergence(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(M,) KL(N(mean, std^2) || N(0, I)), summed over code dimensions."""
    return 0.5 * (mean**2 + std**2 - 2.0 * torch.log(std) - 1.0).sum(dim=1)
