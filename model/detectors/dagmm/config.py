"""TS-DAGMM's settings: :class:`TSDAGMMConfig` (networks, loss, mixture, training, calibration)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from model.errors import DataError
from model.fitting import (
    build_config,
    check_config,
    check_field_types,
    config_items,
    training_checks,
)

RECON_FEATURES = ("rd", "cos", "mse", "mae", "align", "trend")
_OPTIONAL = ("grad_clip", "patience", "threshold_fpr")  # config fields that may be None


@dataclass(frozen=True)
class TSDAGMMConfig:
    """Every setting of TS-DAGMM (networks, loss, mixture, training, calibration)."""

    hidden_size: int = 32  # LSTM units per direction (encoder) and of the decoder
    num_layers: int = 2  # encoder (bidirectional) and decoder layers
    latent_dim: int = 4  # size of the code z_c
    decoder_time_input: bool = True  # feed t / (L - 1) to the decoder next to the code
    recon_features: tuple[str, ...] = RECON_FEATURES  # appended to z_c, in this order
    align_band: float = 0.05  # alignment band as a fraction of the window length (>= 1 step)
    recon_eps: float = 1e-2  # per-sample addition to squared norms in rd and cos
    # errors enter z as log(err + error_eps) and cos as log(1 - cos + error_eps)
    log_errors: bool = True
    error_eps: float = 1e-6
    # batch-normalise z (no affine; running statistics when scoring) before the estimation
    # network and the mixture
    standardise_z: bool = True
    estimator_hidden: int = 10  # DAGMM: FC(D, 10, tanh) - dropout - FC(10, K, softmax)
    estimator_dropout: float = 0.5
    n_components: int = 4
    lambda_energy: float = 0.1
    lambda_cov: float = 0.005
    cov_floor: float = 1e-6  # absolute variance floor
    cov_floor_relative: float = 0.1  # plus this fraction of each feature's variance
    epochs: int = 150  # warm-up included
    # an epoch is one shuffled pass, or as many passes as give at least this many steps
    min_steps_per_epoch: int = 4
    # the first warmup_fraction of the epochs train the autoencoder alone (as DAGMM-p)
    warmup_fraction: float = 0.3
    batch_size: int = 128  # the per-batch mixture needs many windows per component
    lr: float = 3e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 5.0
    validation_fraction: float = 0.2  # seeded share of the training windows held out
    patience: int | None = 20  # epochs without validation improvement before stopping
    threshold_fpr: float | None = 0.01  # fit() ends with infer_threshold(fpr=...) if set
    normalise_input: bool = True  # standardise inputs with training mean/std per feature

    def __post_init__(self) -> None:
        object.__setattr__(self, "recon_features", tuple(self.recon_features))
        check_field_types(self, "TS-DAGMM config", optional=_OPTIONAL)
        checks: list[tuple[bool, str]] = [
            (self.hidden_size >= 1 and self.num_layers >= 1, "hidden_size/num_layers >= 1"),
            (self.latent_dim >= 1 and self.estimator_hidden >= 1, "latent/estimator sizes >= 1"),
            (
                all(f in RECON_FEATURES for f in self.recon_features)
                and len(set(self.recon_features)) == len(self.recon_features),
                f"recon_features must be distinct names from {RECON_FEATURES}",
            ),
            (0.0 <= self.align_band < 1.0, "align_band must be in [0, 1)"),
            (self.recon_eps > 0 and self.error_eps > 0, "recon_eps and error_eps must be > 0"),
            (0.0 <= self.estimator_dropout < 1.0, "estimator_dropout must be in [0, 1)"),
            (self.n_components >= 1, "n_components must be >= 1"),
            (self.lambda_energy >= 0 and self.lambda_cov >= 0, "lambdas must be >= 0"),
            (self.cov_floor > 0, "cov_floor must be > 0 (it keeps covariances invertible)"),
            (self.cov_floor_relative >= 0, "cov_floor_relative must be >= 0"),
            (
                self.epochs >= 0 and self.batch_size >= 2,
                "epochs >= 0 and batch_size >= 2 (a batch mixture needs two windows)",
            ),
            (self.min_steps_per_epoch >= 1, "min_steps_per_epoch must be >= 1"),
            (self.lr > 0 and self.weight_decay >= 0, "lr > 0 and weight_decay >= 0"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be null or > 0"),
            (0.0 <= self.warmup_fraction < 1.0, "warmup_fraction must be in [0, 1)"),
            *training_checks(self.validation_fraction, self.patience, self.threshold_fpr),
        ]
        check_config("TS-DAGMM config", checks)

    @property
    def warmup_epochs(self) -> int:
        return round(self.warmup_fraction * self.epochs)

    @property
    def z_dim(self) -> int:
        return self.latent_dim + len(self.recon_features)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["recon_features"] = list(self.recon_features)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TSDAGMMConfig:
        kwargs = config_items(cls, data, "TS-DAGMM config")
        if "recon_features" in kwargs:
            feats = kwargs["recon_features"]
            if isinstance(feats, str) or not isinstance(feats, Sequence):
                raise DataError(f"recon_features must be a list of names from {RECON_FEATURES}")
            kwargs["recon_features"] = tuple(feats)
        return build_config(cls, kwargs, "TS-DAGMM config")
