"""Seq2GMM configuration: plain dataclasses, serialisable to and from JSON.

Two named configurations ship with the package:

- ``faithful``: the reference implementation (Yang et al., TNSE 2022) as published: K = 3 pwlf
  segments, a 15-unit GRU encoder, a free-running GRU decoder that reconstructs the segment plus
  [EOS, PAD, PAD], z = [rd, h_c, cs], a linear 17 -> 128 -> 128 -> 1 estimator, one diagonal
  Gaussian, loss ``1e-4 * mean(E) + mean(|x - x'|)``, one warm-up Adam step (lr 0.01) on the
  reconstruction, then per epoch an EM fit of the mixture followed by one full-batch Adam step
  (lr 1e-3); series score = max segment energy. 100 epochs (the reference's 500 select their
  checkpoint on the test set; without that, 100 epochs measured best, see the docs); the
  distances cover each segment's own [x, EOS, PAD, PAD], never the batch's padding.
- ``default``: this project's design (see :func:`default_config`; deviations and their
  measured effects are documented with the benchmark).

:func:`load_config` accepts either name or the path of a JSON file written by
:meth:`Seq2GMMConfig.to_json` (unknown keys are refused, missing keys take the defaults).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from model.errors import DataError
from model.fitting import check_config, config_items

DESCRIPTORS = (
    "length",
    "position",
    "level",
    "spread",
    "endpoints",
    "slope",
    "shape",
    "context",
)
AGGREGATES = ("max", "mean", "length_normalised")
ENERGY_NORMS = ("none", "position")
CYCLE_METRICS = ("euclidean", "dtw", "sbd")
DECODERS = ("free_running", "conditioned", "phase_mlp")
RECON_LOSSES = ("distance", "mse")
SELECTIONS = ("loss", "energy")


@dataclass
class SegmentationConfig:
    """How windows are cut: segmenter name for ``make_segmenter`` ("dp" or "pwlf") and K."""

    method: str = "dp"
    n_segments: int = 3


@dataclass
class NetworkConfig:
    """Compression network, estimation network and mixture."""

    hidden_size: int = 15  # GRU units of encoder and decoder
    num_layers: int = 1
    bidirectional: bool = False
    decoder: str = "free_running"  # "free_running" (reference) | "conditioned" | "phase_mlp"
    eos_value: float = 1.0  # first decoder input (free-running decoder)
    # Reference: the decoder also reconstructs [EOS, PAD, PAD] after each segment and the
    # distances include them (per segment, never the batch's padding).
    eos_in_target: bool = True
    extra_steps: int = 3
    recon_eps: float = 1e-8  # added to norms in rd = |x - x'| / |x| and cosine similarity
    # Extra per-segment descriptors appended to z = [rd, h_c, cs] (see DESCRIPTORS).
    descriptors: list[str] = field(default_factory=list)
    shape_points: int = 16  # points of the "shape" descriptor (segment resampled)
    context_points: int = 8  # points of the "context" descriptor (whole window resampled)
    # Which network features enter z (reference: all three), before the descriptors.
    z_parts: list[str] = field(default_factory=lambda: ["rd", "code", "cs"])
    estimator_hidden: list[int] = field(default_factory=lambda: [128, 128])
    estimator_activation: str | None = None  # None (reference: linear) | "tanh" | "relu"
    estimator_dropout: float = 0.0
    n_components: int = 1  # mixture components (per position when per_position)
    per_position: bool = False  # one mixture per segment position (segment i of every window)
    membership: str = "estimator"  # mixture weights: "estimator" gamma (reference) | "mixture"
    covariance: str = "diag"  # "diag" | "full"
    cov_floor: float = 1e-6  # absolute variance floor (scikit-learn's reg_covar default)
    cov_floor_relative: float = 0.0  # plus this fraction of each feature's variance
    cov_shrinkage: bool = False  # Ledoit-Wolf shrinkage of full covariances in the M-step
    # The reference computes -log(sum_k gamma_k N_k + 1e-12); 0 disables the cap.
    energy_eps: float = 1e-12


@dataclass
class TrainConfig:
    """Alternating optimisation: EM for the mixture, gradient steps for the networks."""

    epochs: int = 100
    lr: float = 1e-3
    warmup_steps: int = 1  # Adam steps on the reconstruction loss alone, before the first EM
    warmup_lr: float = 0.01
    batch_size: int | None = None  # segments per gradient step; None = full batch (reference)
    energy_weight: float = 1e-4
    recon_loss: str = "distance"  # "distance": mean_s |x - x'|_2 (reference) | "mse"
    weight_decay: float = 0.0
    grad_clip: float | None = None
    em_max_iter: int = 100
    em_tol: float = 1e-3
    em_warm_start: bool = False  # reference refits from a fresh k-means init every epoch
    # Fraction of the training windows held out (never the test set) for early stopping and
    # model selection, threshold and energy statistics. 0 = train on everything, keep the last.
    validation_fraction: float = 0.0
    min_validation_windows: int = 2
    patience: int | None = None  # epochs without validation improvement before stopping
    # What "validation improvement" means: "loss" (reconstruction + energy_weight * energy) or
    # "energy" (mean held-out energy = negative held-out log-likelihood of normal segments).
    selection: str = "loss"
    # After training, refit the mixture with each of these component counts (per position)
    # and keep the best held-out log-likelihood (needs a validation split and
    # membership="mixture"); None keeps network.n_components.
    component_candidates: list[int] | None = None
    min_delta: float = 0.0
    # Reference: the final mixture was fitted to the features before the last gradient step.
    final_em_refit: bool = False
    normalise_input: bool = False  # standardise inputs with training mean/std per feature
    # Training budget (see model.detectors.seq2gmm.train): each epoch samples at most this many
    # training segments (None: all), and epochs stop once epochs x sampled segments x mean
    # segment length would pass sample_budget (None: no cap).
    max_epoch_segments: int | None = None
    sample_budget: float | None = None


@dataclass
class ScoringConfig:
    """How segment energies become a window score, and the automatic threshold."""

    aggregate: str = "max"  # "max" | "mean" | "length_normalised" (length-weighted mean)
    energy_norm: str = "none"  # "none" | "position": robust z-score per segment position
    # If set, fit() ends with infer_threshold(fpr=threshold_fpr) on held-out energies.
    threshold_fpr: float | None = None
    # Whole-cycle evidence beside the segment score (model.detectors.seq2gmm.evidence):
    # distances to the nearest normal cycles under these metrics ("euclidean", "dtw", "sbd"),
    # each a robust z-score, averaged with the calibrated segment score. [] = segments only.
    cycle_metrics: list[str] = field(default_factory=list)
    cycle_points: int = 128  # cycles resampled to their median length, at most this
    cycle_references: int = 1024  # at most this many training cycles kept (seeded sample)
    # > 0: the normal reference scores (threshold, percentiles, evidence calibration) are every
    # training window's score with its segments' mixture fitted without it, in this many folds
    # (model.detectors.seq2gmm.crossfit; needs network.membership = "mixture"). 0: held-out
    # windows only.
    cross_fit_folds: int = 0


@dataclass
class Seq2GMMConfig:
    name: str = "custom"
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Seq2GMMConfig:
        return _from_dict(cls, data, "config")

    def replace(self, **changes: Any) -> Seq2GMMConfig:
        """Copy with top-level fields replaced (e.g. ``train=replace(cfg.train, epochs=10)``)."""
        return replace(self, **changes)


T = TypeVar("T")


def _from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    data = config_items(cls, data, where)
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for name, value in data.items():
        current = getattr(defaults, name)
        if is_dataclass(current) and not isinstance(current, type):
            kwargs[name] = _from_dict(type(current), value, f"{where}.{name}")
        else:
            kwargs[name] = list(value) if isinstance(value, list | tuple) else value
    return cls(**kwargs)


def validate(cfg: Seq2GMMConfig) -> None:
    """Refuse inconsistent settings with a message that says which key to change."""
    n, t, s, g = cfg.network, cfg.train, cfg.scoring, cfg.segmentation
    checks: list[tuple[bool, str]] = [
        (g.n_segments >= 1, "segmentation.n_segments must be >= 1"),
        (n.hidden_size >= 1 and n.num_layers >= 1, "network.hidden_size/num_layers must be >= 1"),
        (n.decoder in DECODERS, f"network.decoder must be one of {DECODERS}"),
        (n.covariance in ("diag", "full"), "network.covariance must be 'diag' or 'full'"),
        (n.n_components >= 1, "network.n_components must be >= 1"),
        (
            n.membership in ("estimator", "mixture"),
            "network.membership must be 'estimator' or 'mixture'",
        ),
        (n.cov_floor > 0, "network.cov_floor must be > 0 (it keeps covariances invertible)"),
        (n.cov_floor_relative >= 0, "network.cov_floor_relative must be >= 0"),
        (n.energy_eps >= 0, "network.energy_eps must be >= 0"),
        (
            all(d in DESCRIPTORS for d in n.descriptors),
            f"network.descriptors must be from {DESCRIPTORS}",
        ),
        (
            n.shape_points >= 2 and n.context_points >= 2,
            "network.shape_points and network.context_points must be >= 2",
        ),
        (
            n.estimator_activation in (None, "tanh", "relu"),
            "network.estimator_activation must be null, 'tanh' or 'relu'",
        ),
        (0.0 <= n.estimator_dropout < 1.0, "network.estimator_dropout must be in [0, 1)"),
        (t.epochs >= 0 and t.warmup_steps >= 0, "train.epochs and train.warmup_steps must be >= 0"),
        (t.lr > 0 and t.warmup_lr > 0, "train.lr and train.warmup_lr must be > 0"),
        (t.batch_size is None or t.batch_size >= 1, "train.batch_size must be null or >= 1"),
        (t.recon_loss in RECON_LOSSES, f"train.recon_loss must be one of {RECON_LOSSES}"),
        (t.selection in SELECTIONS, f"train.selection must be one of {SELECTIONS}"),
        (0.0 <= t.validation_fraction < 1.0, "train.validation_fraction must be in [0, 1)"),
        (t.patience is None or t.patience >= 1, "train.patience must be null or >= 1"),
        (t.em_max_iter >= 1, "train.em_max_iter must be >= 1"),
        (
            t.max_epoch_segments is None or t.max_epoch_segments >= 1,
            "train.max_epoch_segments must be null or >= 1",
        ),
        (t.sample_budget is None or t.sample_budget > 0, "train.sample_budget must be null or > 0"),
        (
            t.component_candidates is None
            or (len(t.component_candidates) > 0 and min(t.component_candidates) >= 1),
            "train.component_candidates must be null or a non-empty list of counts >= 1",
        ),
        (
            t.component_candidates is None or n.membership == "mixture",
            "train.component_candidates needs network.membership = 'mixture'",
        ),
        (s.aggregate in AGGREGATES, f"scoring.aggregate must be one of {AGGREGATES}"),
        (
            all(m in CYCLE_METRICS for m in s.cycle_metrics),
            f"scoring.cycle_metrics must be from {CYCLE_METRICS}",
        ),
        (s.cross_fit_folds >= 0, "scoring.cross_fit_folds must be >= 0"),
        (
            s.cross_fit_folds == 0 or n.membership == "mixture",
            "scoring.cross_fit_folds needs network.membership = 'mixture'",
        ),
        (
            s.cycle_points >= 2 and s.cycle_references >= 2,
            "scoring.cycle_points and scoring.cycle_references must be >= 2",
        ),
        (s.energy_norm in ENERGY_NORMS, f"scoring.energy_norm must be one of {ENERGY_NORMS}"),
        (
            s.threshold_fpr is None or 0.0 < s.threshold_fpr < 1.0,
            "scoring.threshold_fpr must be null or in (0, 1)",
        ),
    ]
    check_config("Seq2GMM config", checks)


def faithful_config() -> Seq2GMMConfig:
    """The reference implementation's settings (see the module docstring)."""
    return Seq2GMMConfig(
        name="faithful",
        segmentation=SegmentationConfig(method="pwlf", n_segments=3),
        network=NetworkConfig(),
        train=TrainConfig(epochs=100),
        scoring=ScoringConfig(),
    )


def default_config() -> Seq2GMMConfig:
    """This project's design; every deviation from ``faithful`` is measured in the docs.

    DP segmentation; inputs standardised; a phase-conditioned MLP decoder on the true samples
    only; z = [h_c, segment shape resampled to 32 points, length, position, level, spread,
    endpoints] (adding rd and cs changed AUC by -0.011..+0.012); a full-covariance Gaussian
    mixture per segment position (EM weights, 1/2/3/5 components chosen by held-out
    likelihood) with a per-position relative floor; energies calibrated per position (robust
    z-score) before the max; mini-batches; validation-based model selection.

    Window score: the segment score beside whole-cycle evidence, the distance to the nearest
    normal cycle under Euclidean, DTW and SBD (model.detectors.seq2gmm.evidence), each a
    robust z-score against cross-fitted normal scores, compressed and averaged. Threshold and
    percentiles from every training window scored out of fold (5 folds). Training budget:
    at most 1,024 segments an epoch and 6e6 segment samples in all.
    """
    return Seq2GMMConfig(
        name="default",
        segmentation=SegmentationConfig(method="dp", n_segments=3),
        network=NetworkConfig(
            hidden_size=15,
            decoder="phase_mlp",
            eos_in_target=False,
            extra_steps=0,
            descriptors=["shape", "length", "position", "level", "spread", "endpoints"],
            shape_points=32,
            z_parts=["code"],
            estimator_hidden=[32],
            estimator_activation="tanh",
            estimator_dropout=0.0,
            n_components=1,
            per_position=True,
            membership="mixture",
            covariance="full",
            cov_floor=1e-6,
            cov_floor_relative=0.01,
            energy_eps=0.0,
        ),
        train=TrainConfig(
            epochs=100,
            lr=3e-3,
            warmup_steps=1,
            warmup_lr=0.01,
            batch_size=512,
            energy_weight=1e-3,
            recon_loss="mse",
            em_max_iter=50,
            em_warm_start=True,
            validation_fraction=0.2,
            patience=30,
            component_candidates=[1, 2, 3, 5],
            final_em_refit=True,
            normalise_input=True,
            max_epoch_segments=1024,
            sample_budget=6_000_000,
        ),
        scoring=ScoringConfig(
            aggregate="max",
            energy_norm="position",
            threshold_fpr=0.01,
            cycle_metrics=["euclidean", "dtw", "sbd"],
            cross_fit_folds=5,
        ),
    )


NAMED_CONFIGS = {"faithful": faithful_config, "default": default_config}


def load_config(name_or_path: str | Path) -> Seq2GMMConfig:
    """``"faithful"``, ``"default"`` or the path of a JSON config file."""
    key = str(name_or_path)
    if key in NAMED_CONFIGS:
        return NAMED_CONFIGS[key]()
    path = Path(name_or_path)
    if not path.is_file():
        raise DataError(
            f"unknown config {key!r}: use one of {sorted(NAMED_CONFIGS)} or the path of a JSON file"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"config file {path} is not valid JSON: {exc}") from exc
    return Seq2GMMConfig.from_dict(data)
