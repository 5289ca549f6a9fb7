"""The classifier networks: a (Bi)LSTM or FCN encoder and a dense head, one logit per window.

Shapes: B windows, T the longest window (zero-padded), F input channels, H units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from model.detectors.classifier.config import ClassifierConfig


class _LSTMEncoder(nn.Module):
    """Stacked (Bi)LSTMs on a packed batch -> the last layer's final state(s), (B, D * H)."""

    def __init__(self, n_features: int, hidden: Sequence[int], bidirectional: bool) -> None:
        super().__init__()
        d = 2 if bidirectional else 1
        sizes = [n_features, *(h * d for h in hidden[:-1])]
        self.layers = nn.ModuleList(
            nn.LSTM(i, h, batch_first=True, bidirectional=bidirectional)
            for i, h in zip(sizes, hidden, strict=True)
        )
        self.out_features = hidden[-1] * d

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        seq: PackedSequence = pack_padded_sequence(
            x, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        h_n = torch.empty(0)
        for lstm in self.layers:
            seq, (h_n, _) = lstm(seq)  # h_n: (D, B, H), state after each true length
        return h_n.transpose(0, 1).reshape(x.shape[0], -1)  # (B, D * H)


class _MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose batch statistics skip padded time steps (same state dict)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, C, T), mask: (B, 1, T) float 0/1
        if not self.training or mask is None:
            return super().forward(x)
        n = mask.sum()
        mean = (x * mask).sum(dim=(0, 2)) / n  # (C,)
        var = (((x - mean[None, :, None]) ** 2) * mask).sum(dim=(0, 2)) / n  # biased
        with torch.no_grad():
            assert self.running_mean is not None and self.running_var is not None
            m = self.momentum if self.momentum is not None else 0.1
            unbiased = var * n / torch.clamp(n - 1, min=1.0)
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * unbiased)
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
        y = (x - mean[None, :, None]) / torch.sqrt(var[None, :, None] + self.eps)
        return y * self.weight[None, :, None] + self.bias[None, :, None]


class _FCNEncoder(nn.Module):
    """Conv1d -> BatchNorm -> ReLU blocks ("same" length, zero padding), padding re-zeroed
    after each block, then global average pooling over each window's true steps."""

    def __init__(self, n_features: int, filters: Sequence[int], kernels: Sequence[int]) -> None:
        super().__init__()
        chans = [n_features, *filters]
        self.kernels = tuple(int(k) for k in kernels)
        self.convs = nn.ModuleList(
            nn.Conv1d(chans[i], chans[i + 1], k) for i, k in enumerate(self.kernels)
        )
        self.norms = nn.ModuleList(_MaskedBatchNorm1d(c) for c in filters)
        self.out_features = filters[-1]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        t = torch.arange(x.shape[1], device=x.device)
        mask = (t[None, :] < lengths.to(x.device)[:, None]).to(x.dtype)[:, None, :]  # (B, 1, T)
        h = x.transpose(1, 2) * mask  # (B, F, T)
        for k, conv, norm in zip(self.kernels, self.convs, self.norms, strict=True):
            h = conv(F.pad(h, ((k - 1) // 2, k // 2)))  # (B, C, T), as padding="same"
            h = torch.relu(norm(h, mask)) * mask  # padding zero again
        return h.sum(dim=2) / mask.sum(dim=2)  # (B, C) global average over true steps


class WindowClassifier(nn.Module):
    """Encoder -> [dropout -> dense -> ReLU] -> dropout -> linear: one logit per window."""

    def __init__(self, n_features: int, cfg: ClassifierConfig) -> None:
        super().__init__()
        hidden = cfg.resolved_hidden
        self.differences = cfg.differences
        n_in = n_features * (2 if cfg.window_norm else 1) * (2 if cfg.differences else 1)
        self.encoder: _LSTMEncoder | _FCNEncoder
        if cfg.architecture == "fcn":
            self.encoder = _FCNEncoder(n_in, hidden, cfg.kernel_sizes)
        else:
            self.encoder = _LSTMEncoder(n_in, hidden, cfg.architecture == "bilstm")
        width = self.encoder.out_features
        layers: list[nn.Module] = []
        if cfg.dense:
            layers += [nn.Dropout(cfg.dropout), nn.Linear(width, cfg.dense), nn.ReLU()]
            width = cfg.dense
        layers += [nn.Dropout(cfg.dropout), nn.Linear(width, 1)]
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x: (B, T, F) zero-padded, lengths: (B,) -> (B,) logits
        if self.differences:
            d = torch.diff(x, dim=1, prepend=x[:, :1])  # (B, T, F), 0 at step 0
            x = torch.cat([x, d], dim=2)  # (B, T, 2F); padded steps are never read
        return self.head(self.encoder(x, lengths)).squeeze(1)
