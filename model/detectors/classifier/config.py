"""The classifier's settings: :class:`ClassifierConfig` and the names it accepts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from model.fitting import build_config, check_config, config_items

Architecture = Literal["bilstm", "lstm", "fcn"]
LabelRule = Literal["last", "next", "any"]
ValidationSplit = Literal["blocked", "random", "tail"]
Monitor = Literal["loss", "pr_auc"]

ARCHITECTURES = ("bilstm", "lstm", "fcn")
LABEL_RULES = ("last", "next", "any")
VALIDATION_SPLITS = ("blocked", "random", "tail")
MONITORS = ("loss", "pr_auc")
DEFAULT_HIDDEN: dict[str, tuple[int, ...]] = {
    "bilstm": (100,),
    "lstm": (64, 32),
    "fcn": (64, 128, 64),
}


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything that defines a classifier and its training; see the module docstring."""

    architecture: Architecture = "bilstm"
    # LSTM units per stacked layer (bilstm: per direction) or FCN filters per block;
    # None = DEFAULT_HIDDEN[architecture]
    hidden: tuple[int, ...] | None = None
    kernel_sizes: tuple[int, ...] = (8, 5, 3)  # FCN only, one per block
    dense: int = 32  # units of the dense layer before the output; 0 = none
    dropout: float = 0.2  # before each dense layer
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    pos_weight: float | str = "balanced"  # "balanced" or a positive float
    negatives_per_epoch: int | None = 2048  # normal windows drawn per epoch; None = all
    validation_fraction: float = 0.2  # share of the training windows held out; 0 = none
    validation_split: ValidationSplit = "blocked"
    validation_block: int = 256  # windows per block ("blocked")
    validation_gap: int | None = None  # purged windows per side; None = window length - 1
    monitor: Monitor = "pr_auc"  # early stopping / best epoch: validation "pr_auc" or "loss"
    patience: int | None = 5  # epochs without validation improvement; None = run all
    robust_scaling: bool = True
    differences: bool = True  # also feed each input channel's first difference (0 at step 0)
    window_norm: bool = True  # also feed each feature centred/scaled by the window's median/IQR
    label_rule: LabelRule = "last"
    threshold_fpr: float | None = None  # None: F1-optimal validation threshold; else FPR

    def __post_init__(self) -> None:
        for name in ("hidden", "kernel_sizes"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        hidden = self.resolved_hidden
        pw = self.pos_weight
        checks: list[tuple[bool, str]] = [
            (self.architecture in ARCHITECTURES, f"architecture must be one of {ARCHITECTURES}"),
            (
                len(hidden) >= 1 and all(_is_int(h) and h >= 1 for h in hidden),
                "hidden must be a non-empty list of positive integers",
            ),
            (
                self.architecture != "fcn" or len(hidden) == len(self.kernel_sizes),
                "the fcn needs one kernel size per block: len(kernel_sizes) == len(hidden)",
            ),
            (
                all(_is_int(k) and k >= 1 for k in self.kernel_sizes),
                "kernel_sizes must be positive integers",
            ),
            (_is_int(self.dense) and self.dense >= 0, "dense must be an integer >= 0"),
            (_is_num(self.dropout) and 0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (_is_int(self.epochs) and self.epochs >= 1, "epochs must be an integer >= 1"),
            (_is_int(self.batch_size) and self.batch_size >= 1, "batch_size must be >= 1"),
            (_is_num(self.lr) and self.lr > 0, "lr must be > 0"),
            (_is_num(self.weight_decay) and self.weight_decay >= 0, "weight_decay must be >= 0"),
            (
                self.grad_clip is None or (_is_num(self.grad_clip) and self.grad_clip > 0),
                "grad_clip must be > 0 or null",
            ),
            (
                pw == "balanced" or (_is_num(pw) and not isinstance(pw, str) and pw > 0),
                "pos_weight must be 'balanced' or a positive number",
            ),
            (
                self.negatives_per_epoch is None
                or (_is_int(self.negatives_per_epoch) and self.negatives_per_epoch >= 1),
                "negatives_per_epoch must be a positive integer or null",
            ),
            (
                _is_num(self.validation_fraction) and 0.0 <= self.validation_fraction < 1.0,
                "validation_fraction must be in [0, 1)",
            ),
            (
                self.validation_split in VALIDATION_SPLITS,
                f"validation_split must be one of {VALIDATION_SPLITS}",
            ),
            (
                _is_int(self.validation_block) and self.validation_block >= 1,
                "validation_block must be a positive integer",
            ),
            (
                self.validation_gap is None
                or (_is_int(self.validation_gap) and self.validation_gap >= 0),
                "validation_gap must be an integer >= 0 or null",
            ),
            (self.monitor in MONITORS, f"monitor must be one of {MONITORS}"),
            (
                self.patience is None or (_is_int(self.patience) and self.patience >= 1),
                "patience must be a positive integer or null",
            ),
            (isinstance(self.robust_scaling, bool), "robust_scaling must be true or false"),
            (isinstance(self.differences, bool), "differences must be true or false"),
            (isinstance(self.window_norm, bool), "window_norm must be true or false"),
            (self.label_rule in LABEL_RULES, f"label_rule must be one of {LABEL_RULES}"),
            (
                self.threshold_fpr is None
                or (_is_num(self.threshold_fpr) and 0.0 < self.threshold_fpr < 1.0),
                "threshold_fpr must be strictly between 0 and 1, or null (F1-optimal)",
            ),
        ]
        check_config("classifier config", checks)

    @property
    def resolved_hidden(self) -> tuple[int, ...]:
        """``hidden``, or the architecture's default sizes when it is None."""
        if self.hidden is not None:
            return tuple(self.hidden)
        return DEFAULT_HIDDEN.get(self.architecture, (1,))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples as lists)."""
        out = asdict(self)
        for name in ("hidden", "kernel_sizes"):
            if out[name] is not None:
                out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassifierConfig:
        """Inverse of :meth:`to_dict`; missing keys take the defaults, unknown keys are refused."""
        kwargs = config_items(cls, data, "classifier config")
        return build_config(cls, kwargs, "classifier config")


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float | np.number) and not isinstance(x, bool) and math.isfinite(x)
