"""Baseline detectors for the evaluation harness, all implementing :class:`model.base.Detector`.

- :class:`IsolationForestDetector`, :class:`OneClassSVMDetector`: scikit-learn models on raw
  (flattened) windows; scikit-learn is imported only when they are fitted.
- :class:`LSTMAutoencoderDetector`: a small LSTM autoencoder, score = reconstruction error.

Every score is higher for more anomalous windows. Windows are arrays (L,) or (L, F).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Self

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from model.errors import DataError, NotFittedError, Seq2GMMError
from model.fitting import as_windows, input_standardisation, pad_windows, seeded


def _equal_length_matrix(
    windows: Sequence[np.ndarray], who: str, shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Windows flattened to an (N, L*F) matrix; all windows (and ``shape`` if given) equal."""
    ws = as_windows(windows, who=who)
    shapes = {w.shape for w in ws}
    if len(shapes) > 1:
        lengths = sorted({s[0] for s in shapes})
        raise DataError(
            f"{who} needs windows of one length, got lengths {lengths[:5]}; cut fixed-length"
            " windows (model.evaluation.data.sliding_windows) or use the knn, seq2gmm or"
            " lstm-ae detector"
        )
    got: tuple[int, int] = (ws[0].shape[0], ws[0].shape[1])
    if shape is not None and got != shape:
        raise DataError(f"{who} was trained on windows of shape {shape}, got {got}")
    return np.stack([w.reshape(-1) for w in ws]), got


def _sklearn_class(module: str, name: str) -> Any:
    try:
        mod = importlib.import_module(f"sklearn.{module}")
    except ImportError as exc:
        raise Seq2GMMError(
            f"the {name} baseline needs scikit-learn: pip install 'seq2gmm-worker[baselines]'"
        ) from exc
    return getattr(mod, name)


class IsolationForestDetector:
    """Isolation Forest (scikit-learn) on raw flattened windows; score = -score_samples."""

    kind = "iforest"
    supervised = False

    def __init__(self, n_estimators: int = 100, max_samples: int | float | str = "auto") -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self._model: Any = None
        self._shape: tuple[int, int] | None = None

    def fit(self, windows: Sequence[np.ndarray], *, seed: int = 0, progress: bool = False) -> Self:
        X, self._shape = _equal_length_matrix(windows, "IsolationForestDetector")
        forest = _sklearn_class("ensemble", "IsolationForest")
        self._model = forest(
            n_estimators=self.n_estimators, max_samples=self.max_samples, random_state=seed
        ).fit(X)
        return self

    def score(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        if self._model is None:
            raise NotFittedError("IsolationForestDetector: call fit before score")
        X, _ = _equal_length_matrix(windows, "IsolationForestDetector", self._shape)
        return np.asarray(-self._model.score_samples(X), dtype=np.float64)


class OneClassSVMDetector:
    """One-class SVM (scikit-learn, RBF kernel) on raw flattened windows.

    Score = -score_samples. Deterministic: the seed is not used.
    """

    kind = "ocsvm"
    supervised = False

    def __init__(self, nu: float = 0.5, gamma: float | str = "scale") -> None:
        self.nu = nu
        self.gamma = gamma
        self._model: Any = None
        self._shape: tuple[int, int] | None = None

    def fit(self, windows: Sequence[np.ndarray], *, seed: int = 0, progress: bool = False) -> Self:
        X, self._shape = _equal_length_matrix(windows, "OneClassSVMDetector")
        svm = _sklearn_class("svm", "OneClassSVM")
        self._model = svm(kernel="rbf", nu=self.nu, gamma=self.gamma).fit(X)
        return self

    def score(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        if self._model is None:
            raise NotFittedError("OneClassSVMDetector: call fit before score")
        X, _ = _equal_length_matrix(windows, "OneClassSVMDetector", self._shape)
        return np.asarray(-self._model.score_samples(X), dtype=np.float64)


class _LSTMAutoencoder(nn.Module):
    """Encoder LSTM -> final state (h, c) -> decoder LSTM started from it, fed zeros, whose
    linear read-out reconstructs the window in reverse order (last sample first), as in
    EncDec-AD (Malhotra et al., 2016); the output is flipped back to time order."""

    def __init__(self, n_features: int, hidden: int) -> None:
        super().__init__()
        self.encoder = nn.LSTM(n_features, hidden, batch_first=True)
        self.decoder = nn.LSTM(n_features, hidden, batch_first=True)
        self.readout = nn.Linear(hidden, n_features)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, state = self.encoder(packed)  # (1, B, H) each: the state after each true length
        out, _ = self.decoder(torch.zeros_like(x), state)
        rev = self.readout(out)  # rev[:, t] reconstructs x[:, length - 1 - t]
        t = torch.arange(x.shape[1], device=x.device)[None, :]
        src = (lengths.to(x.device)[:, None] - 1 - t).clamp(min=0)  # padding: don't care
        return torch.gather(rev, 1, src[:, :, None].expand(-1, -1, rev.shape[2]))


class LSTMAutoencoderDetector:
    """A plain LSTM autoencoder; score = mean squared reconstruction error of the window.

    Inputs are standardised with the training mean/std of each feature. Variable-length
    windows are packed and the loss and score are masked to the true lengths. Training is
    seeded (private RNG state; the global torch RNG is left as it was) and bounded by about
    ``steps`` mini-batch Adam updates (whole shuffled epochs, at least one).
    ``on_epoch(epoch, mean_loss)`` is called after every epoch if given (progress rendering
    is the caller's business).
    """

    kind = "lstm-ae"
    supervised = False

    def __init__(
        self,
        hidden: int = 32,
        steps: int = 800,
        batch_size: int = 32,
        lr: float = 5e-3,
        on_epoch: Callable[[int, float], None] | None = None,
    ) -> None:
        if min(hidden, steps, batch_size) < 1 or not lr > 0:
            raise DataError("hidden, steps and batch_size must be >= 1 and lr > 0")
        self.hidden = hidden
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.on_epoch = on_epoch
        self._net: _LSTMAutoencoder | None = None
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None

    def _standardise(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        assert self._mean is not None and self._std is not None
        return [(w - self._mean) / self._std for w in windows]

    @staticmethod
    def _errors(net: _LSTMAutoencoder, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) mean squared error over each window's true samples and features."""
        recon = net(x, lengths)
        mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]  # (B, T)
        sq = ((recon - x) ** 2).mean(dim=2) * mask
        return sq.sum(dim=1) / lengths.to(sq.dtype)

    def fit(self, windows: Sequence[np.ndarray], *, seed: int = 0, progress: bool = False) -> Self:
        ws = as_windows(windows, who="LSTMAutoencoderDetector")
        self._mean, self._std = input_standardisation(ws, floor=1e-12)
        x_all, len_all = pad_windows(self._standardise(ws), np.float32)
        n = x_all.shape[0]
        batches = -(-n // self.batch_size)
        epochs = -(-self.steps // batches)
        with seeded(seed):
            net = _LSTMAutoencoder(ws[0].shape[1], self.hidden)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr)
            gen = torch.Generator().manual_seed(seed)
            net.train()
            for epoch in range(epochs):
                order = torch.randperm(n, generator=gen)
                total = 0.0
                for a in range(0, n, self.batch_size):
                    idx = order[a : a + self.batch_size]
                    lengths = len_all[idx]
                    x = x_all[idx, : int(lengths.max())]
                    loss = self._errors(net, x, lengths).mean()
                    opt.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                    opt.step()
                    total += float(loss.detach()) * idx.numel()
                if self.on_epoch is not None:
                    self.on_epoch(epoch, total / n)
        net.eval()
        self._net = net
        return self

    def score(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        if self._net is None or self._mean is None:
            raise NotFittedError("LSTMAutoencoderDetector: call fit before score")
        n_features = self._mean.shape[0]
        ws = as_windows(windows, who="LSTMAutoencoderDetector", n_features=n_features)
        ws = self._standardise(ws)
        out = []
        with torch.no_grad():
            for a in range(0, len(ws), 256):
                x, lengths = pad_windows(ws[a : a + 256], np.float32)
                out.append(self._errors(self._net, x, lengths))
        return torch.cat(out).numpy().astype(np.float64)
