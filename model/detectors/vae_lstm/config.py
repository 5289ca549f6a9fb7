"""VAE-LSTM's settings: :class:`VAELSTMConfig` (reference values in the comments)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from model.errors import DataError
from model.fitting import build_config, check_config, config_items, training_checks

READOUTS = ("lstm", "linear")


@dataclass(frozen=True)
class VAELSTMConfig:
    """Hyper-parameters of :class:`VAELSTMDetector` (reference values in the comments)."""

    # None (default): L // n_subwindows of the shortest training window, 48 for the paper's 576
    subwindow_length: int | None = None
    n_subwindows: int = 12  # reference: 12 (sequence of 576 samples)
    code_dim: int = 6  # reference: 6
    conv_channels: tuple[int, ...] = (16, 32, 64)  # stride-2 convs; reference: 32, 64, 128, 512
    hidden: int = 128  # dense width after the convs / before the decoder convs; reference: 512
    lstm_sizes: tuple[int, ...] = (64, 64)  # hidden LSTM layers; reference: 64, 64
    lstm_readout: str = "lstm"  # last layer: "lstm" with code_dim units (reference) | "linear"
    vae_epochs: int = 20
    lstm_epochs: int = 20  # reference: 20
    batch_size: int = 64  # reference: 32
    vae_lr: float = 4e-4  # reference: 4e-4
    lstm_lr: float = 2e-4  # reference: 2e-4
    beta: float = 0.02  # KL weight against the summed squared error (2 sigma^2, sigma = 0.1)
    min_std: float = 1e-2  # floor of the posterior std (reference: 1e-2)
    normalise_input: bool = True  # standardise each feature with the training mean/std
    validation_fraction: float = 0.1  # held-out share of the training windows
    patience: int | None = 5  # epochs without validation improvement before a stage stops
    threshold_fpr: float | None = 0.01  # fit() ends with infer_threshold(fpr=...) if set

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (
                self.subwindow_length is None or self.subwindow_length >= 1,
                "subwindow_length must be null (auto) or >= 1",
            ),
            (self.n_subwindows >= 2, "n_subwindows must be >= 2 (the LSTM predicts 2..n)"),
            (self.code_dim >= 1 and self.hidden >= 1, "code_dim and hidden must be >= 1"),
            (
                len(self.conv_channels) >= 1 and min(self.conv_channels) >= 1,
                "conv_channels must be a non-empty list of channel counts >= 1",
            ),
            (
                len(self.lstm_sizes) >= 1 and min(self.lstm_sizes) >= 1,
                "lstm_sizes must be a non-empty list of unit counts >= 1",
            ),
            (self.lstm_readout in READOUTS, f"lstm_readout must be one of {READOUTS}"),
            (self.vae_epochs >= 1 and self.lstm_epochs >= 1, "vae/lstm_epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.vae_lr > 0 and self.lstm_lr > 0, "vae_lr and lstm_lr must be > 0"),
            (self.beta >= 0, "beta must be >= 0"),
            (self.min_std > 0, "min_std must be > 0"),
            *training_checks(self.validation_fraction, self.patience, self.threshold_fpr),
        ]
        check_config("VAE-LSTM config", checks)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["conv_channels"] = list(self.conv_channels)
        out["lstm_sizes"] = list(self.lstm_sizes)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VAELSTMConfig:
        kwargs = config_items(cls, data, "VAE-LSTM config")
        for key in ("conv_channels", "lstm_sizes"):
            if key in kwargs:
                value = kwargs[key]
                if not isinstance(value, list | tuple) or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in value
                ):
                    raise DataError(f"VAE-LSTM config {key} must be a list of integers")
                kwargs[key] = tuple(value)
        return build_config(cls, kwargs, "VAE-LSTM config")
