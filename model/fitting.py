"""Setup that the detectors share, written once.

- :func:`as_windows`: validated (L, F) float64 windows sharing one feature count;
- :func:`pad_windows`: windows zero-padded into one (N, T, F) tensor with their lengths;
- :func:`held_out_split`: the seeded held-out share of the training windows
  (``validation_fraction``), the same rule for every detector;
- :func:`input_standardisation`: per-feature mean and floored std of training windows, kept
  by a :class:`StandardisedNetwork` as buffers of its state dict;
- :func:`seeded`: torch seeded for one fit without touching the caller's RNG state;
- :func:`config_items`, :func:`build_config`, :func:`check_config`, :func:`check_field_types`:
  a detector config read from its JSON object and checked, with messages that name the key to
  change.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import MISSING, fields
from typing import Any, TypeVar

import numpy as np
import torch

from model.errors import DataError
from model.segmentation.base import as_window

T = TypeVar("T")

#: the std floor of :func:`input_standardisation`: a (near) constant feature is scaled by 1
STD_FLOOR = 1e-8


def as_windows(
    windows: Sequence[np.ndarray] | np.ndarray,
    *,
    who: str = "the detector",
    n_features: int | None = None,
    min_length: int = 1,
) -> list[np.ndarray]:
    """``windows`` as (L, F) float64 arrays, validated; a :class:`DataError` naming ``who``
    (e.g. "TS-DAGMM") and the window at fault otherwise.

    Accepts a list of (L,) or (L, F) arrays, or one (N, L) or (N, L, F) array. Every window
    must be finite, all must share one feature count (``n_features`` if given, the count the
    model was trained on) and have at least ``min_length`` samples.
    """
    out = _validated(windows, who)
    widths = sorted({w.shape[1] for w in out})
    if len(widths) > 1:
        raise DataError(
            f"windows must share one feature count: all need the same number of features, got"
            f" {widths}"
        )
    if n_features is not None and widths[0] != n_features:
        raise DataError(
            f"the windows have {widths[0]} features but {who} was trained on {n_features}"
            " features; pass windows of the training data's features"
        )
    short = [i for i, w in enumerate(out) if w.shape[0] < min_length]
    if short:
        raise DataError(
            f"window {short[0]} has {out[short[0]].shape[0]} sample(s); {who} needs at least"
            f" {min_length} samples per window (cut longer windows)"
        )
    return out


def _validated(windows: Sequence[np.ndarray] | np.ndarray, who: str) -> list[np.ndarray]:
    """Each window through :func:`as_window`, or a whole (N, L[, F]) array checked at once."""
    if isinstance(windows, np.ndarray) and windows.ndim == 1:
        raise DataError("pass a list of windows (or an (N, L) / (N, L, F) array), not one window")
    if len(windows) == 0:
        raise DataError(f"{who} got no windows; pass a list of (L,) or (L, F) arrays")
    if isinstance(windows, np.ndarray) and windows.ndim in (2, 3):
        arr = np.asarray(windows, dtype=np.float64)
        if arr.shape[1] == 0 or (arr.ndim == 3 and arr.shape[2] == 0):
            raise DataError(f"windows must have L, F >= 1, got an array of shape {arr.shape}")
        finite = np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise DataError(f"window {bad} contains NaN or infinite values; clean or drop it first")
        return list(arr[:, :, None] if arr.ndim == 2 else arr)
    out = []
    for i, w in enumerate(windows):
        try:
            out.append(as_window(w))
        except DataError as exc:
            raise DataError(f"window {i} is invalid: {exc}") from None
    return out


def pad_windows(
    windows: Sequence[np.ndarray], dtype: type[np.floating[Any]] = np.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T_max, F) zero-padded values in ``dtype`` and (N,) int64 lengths of (L, F) windows."""
    lengths = torch.tensor([w.shape[0] for w in windows], dtype=torch.int64)
    x = np.zeros((len(windows), int(lengths.max()), windows[0].shape[1]), dtype=dtype)
    for i, w in enumerate(windows):
        x[i, : w.shape[0]] = w
    return torch.from_numpy(x), lengths


def held_out_split(
    n: int, fraction: float, seed: int, *, min_validation: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) sorted indices of ``n`` windows, the held-out share seeded.

    The rule (every detector's ``validation_fraction``): ``round(fraction * n)`` windows are
    held out; when ``fraction > 0`` but that is fewer than ``min_validation``, exactly
    ``min_validation`` are, provided at least 2 windows are left to train on, else none.
    Which windows: the first of ``numpy.random.default_rng(seed).permutation(n)``.
    """
    n_val = round(fraction * n)
    if fraction > 0 and n_val < min_validation:
        n_val = min_validation if n - min_validation >= 2 else 0
    if n_val >= n:
        raise DataError(
            f"validation_fraction {fraction} holds out all {n} training windows; lower it"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def input_standardisation(
    windows: Sequence[np.ndarray], floor: float = STD_FLOOR
) -> tuple[np.ndarray, np.ndarray]:
    """(F,) float64 mean and std per feature over every sample of the (L, F) ``windows``; a
    std not above ``floor`` becomes 1 (a constant feature is only centred)."""
    stacked = np.concatenate(list(windows), axis=0)  # (sum L, F)
    std = stacked.std(0)
    return stacked.mean(0), np.where(std > floor, std, 1.0)


@contextmanager
def seeded(seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Run the block with torch's global RNG seeded by ``seed`` (on ``device`` too when it is
    a GPU) and restore the caller's RNG state afterwards, so a fit is reproducible per seed
    and leaves the global RNG as it found it."""
    dev = torch.device(device)
    rng_devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices, device_type=dev.type):
        torch.manual_seed(seed)
        yield


def config_items(cls: type, data: Any, where: str) -> dict[str, Any]:
    """``data`` as a dict of ``cls``'s (a dataclass) fields; a DataError naming ``where``
    when it is not a JSON object or has unknown keys. Every detector config uses it."""
    if not isinstance(data, Mapping):
        raise DataError(f"{where} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DataError(f"unknown {where} keys {unknown}; valid keys are {sorted(known)}")
    return dict(data)


def build_config(cls: type[T], kwargs: Mapping[str, Any], where: str) -> T:
    """``cls(**kwargs)``; a DataError naming ``where`` when a value has the wrong type."""
    try:
        return cls(**kwargs)
    except TypeError as exc:  # e.g. a string where a number belongs
        raise DataError(f"invalid {where}: {exc}") from None


def check_config(where: str, checks: Sequence[tuple[bool, str]]) -> None:
    """A DataError ``invalid WHERE: MESSAGE`` for the first ``(ok, message)`` that is not ok."""
    for ok, message in checks:
        if not ok:
            raise DataError(f"invalid {where}: {message}")


def check_field_types(config: Any, where: str, *, optional: Sequence[str] = ()) -> None:
    """A DataError ``invalid WHERE: NAME must be ...`` for the first field of the dataclass
    ``config`` whose value is not of its default's type (a boolean, a string, an integer, or
    else - a float or None default - a number); fields whose default is no scalar (a list, a
    tuple, a factory) and ``optional`` ones holding None pass."""
    for f in fields(config):
        value, default = getattr(config, f.name), f.default
        scalar = default is None or isinstance(default, bool | str | int | float)
        if default is MISSING or not scalar or (value is None and f.name in optional):
            continue
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "a boolean"
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "a string"
        elif isinstance(default, int):
            ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            kind = "a number"
        if not ok:
            raise DataError(f"invalid {where}: {f.name} must be {kind}, got {value!r}")


def training_checks(
    validation_fraction: float, patience: int | None, threshold_fpr: float | None
) -> list[tuple[bool, str]]:
    """The :func:`check_config` checks of the settings that the trained kinds share."""
    return [
        (0.0 <= validation_fraction < 1.0, "validation_fraction must be in [0, 1)"),
        (patience is None or patience >= 1, "patience must be null or >= 1"),
        (
            threshold_fpr is None or 0.0 < threshold_fpr < 1.0,
            "threshold_fpr must be null or in (0, 1)",
        ),
    ]


class StandardisedNetwork(torch.nn.Module):
    """A network that standardises its input with (F,) buffers ``input_mean`` and ``input_std``,
    saved in its state dict so that a checkpoint scores with its training statistics."""

    input_mean: torch.Tensor
    input_std: torch.Tensor

    def __init__(self, n_features: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.zeros(n_features, dtype=dtype))
        self.register_buffer("input_std", torch.ones(n_features, dtype=dtype))

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Store the (F,) statistics of :func:`input_standardisation` (cast to the buffers)."""
        with torch.no_grad():
            self.input_mean.copy_(torch.as_tensor(mean))
            self.input_std.copy_(torch.as_tensor(std))

    def normalisation_metadata(self) -> dict[str, list[float]]:
        """The statistics as JSON lists, for the checkpoint's metadata."""
        return {
            "mean": self.input_mean.detach().cpu().double().tolist(),
            "std": self.input_std.detach().cpu().double().tolist(),
        }
