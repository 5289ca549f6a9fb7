"""Thresholds, kept apart from scoring (as in alibi-detect's ``infer_threshold``).

A detector only scores; a :class:`Threshold` inferred from scores of normal reference data
turns scores into decisions with the project-wide rule ``score > threshold``.
:class:`EnergyQuantiles` summarises a model's training energies compactly so that any new
energy can be reported as a percentile among them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from model.errors import DataError, ThresholdNotSetError

#: "fpr" / "quantile": from normal reference scores (:func:`infer_threshold`); "f1": the
#: F1-optimal cut on a labelled validation split of the training data (supervised kinds)
ThresholdMethod = Literal["fpr", "quantile", "f1"]


def _reference_scores(scores: np.ndarray | Sequence[float], what: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise DataError(f"{what} needs at least one reference score")
    if not np.all(np.isfinite(s)):
        raise DataError(f"{what}: reference scores contain NaN or infinite values")
    return s


@dataclass(frozen=True)
class Threshold:
    """A decision threshold: scores strictly above ``value`` are anomalous."""

    value: float
    method: ThresholdMethod  # how it was inferred
    parameter: float  # the target false-positive rate, the quantile level, or the F1 reached
    n_reference: int  # number of reference scores it was inferred from

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise DataError(f"threshold value must be finite, got {self.value}")
        if self.method not in ("fpr", "quantile", "f1"):
            raise DataError(
                f"threshold method must be 'fpr', 'quantile' or 'f1', got {self.method!r}"
            )
        if self.n_reference < 1:
            raise DataError(f"n_reference must be >= 1, got {self.n_reference}")

    def is_anomalous(self, scores: np.ndarray | Sequence[float]) -> np.ndarray:
        """Boolean flags ``scores > value``."""
        return np.asarray(scores, dtype=np.float64) > self.value

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form."""
        return {
            "value": float(self.value),
            "method": self.method,
            "parameter": float(self.parameter),
            "n_reference": int(self.n_reference),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Threshold:
        try:
            return cls(
                value=float(data["value"]),
                method=data["method"],
                parameter=float(data["parameter"]),
                n_reference=int(data["n_reference"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"not a valid threshold record ({exc!r}); expected keys value, method,"
                " parameter, n_reference"
            ) from None


def infer_threshold(
    scores: np.ndarray | Sequence[float],
    *,
    fpr: float | None = None,
    quantile: float | None = None,
) -> Threshold:
    """Threshold from scores of normal reference data; give exactly one of the two targets.

    - ``fpr=0.01``: about 1% of the reference scores exceed the threshold (it is their
      ``1 - fpr`` quantile, linearly interpolated); ``0 < fpr < 1``.
    - ``quantile=0.99``: the 0.99 quantile of the reference scores; ``0 <= quantile <= 1``.

    Infer it from training or held-out normal scores, never from a labelled test set.
    """
    if (fpr is None) == (quantile is None):
        raise DataError("infer_threshold needs exactly one of fpr=... or quantile=...")
    s = _reference_scores(scores, "infer_threshold")
    if fpr is not None:
        if not 0.0 < fpr < 1.0:
            raise DataError(f"fpr must be strictly between 0 and 1, got {fpr}")
        value = float(np.quantile(s, 1.0 - fpr))
        return Threshold(value, "fpr", float(fpr), int(s.size))
    assert quantile is not None
    if not 0.0 <= quantile <= 1.0:
        raise DataError(f"quantile must be between 0 and 1, got {quantile}")
    return Threshold(float(np.quantile(s, quantile)), "quantile", float(quantile), int(s.size))


def expected_alarm_rate(threshold: Threshold, quantiles: EnergyQuantiles | None) -> float | None:
    """The share of normal windows a model is expected to flag (what monitoring compares the
    live anomaly rate with).

    ``fpr``: its target, the share of the normal reference scores above the threshold;
    ``quantile``: ``1 - level``; ``f1``: the share of the training scores above the threshold,
    from ``quantiles`` (None without them).
    """
    if threshold.method == "fpr":
        return float(threshold.parameter)
    if threshold.method == "quantile":
        return 1.0 - float(threshold.parameter)
    if quantiles is None:
        return None
    return 1.0 - quantiles.percentile(threshold.value) / 100.0


def require_threshold(threshold: Threshold | None) -> Threshold:
    """``threshold``, or :class:`ThresholdNotSetError` when there is none yet."""
    if threshold is None:
        raise ThresholdNotSetError(
            "no threshold set: infer one from normal scores with infer_threshold(scores, fpr=...)"
        )
    return threshold


@dataclass(frozen=True, eq=False)
class EnergyQuantiles:
    """Quantiles of a model's training energies at evenly spaced levels 0, ..., 1.

    ``values[i]`` is the ``i / (len(values) - 1)`` quantile (1001 points by default: a
    resolution of 0.1 percentile points, about 20 KB as JSON).
    """

    values: np.ndarray  # (Q,) float64, non-decreasing, Q >= 2
    n_reference: int
    _knot_x: np.ndarray = field(init=False, repr=False)
    _knot_y: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        v = np.asarray(self.values, dtype=np.float64)
        if v.ndim != 1 or v.size < 2:
            raise DataError(f"EnergyQuantiles needs a 1-D array of >= 2 values, got {v.shape}")
        if not np.all(np.isfinite(v)) or np.any(np.diff(v) < 0):
            raise DataError("EnergyQuantiles values must be finite and non-decreasing")
        if self.n_reference < 1:
            raise DataError(f"n_reference must be >= 1, got {self.n_reference}")
        v.setflags(write=False)
        object.__setattr__(self, "values", v)
        # knots of the interpolated CDF: each distinct value at the middle of its level range
        levels = np.linspace(0.0, 100.0, v.size)
        uniq, first, counts = np.unique(v, return_index=True, return_counts=True)
        mid = (levels[first] + levels[first + counts - 1]) / 2.0
        object.__setattr__(self, "_knot_x", uniq)
        object.__setattr__(self, "_knot_y", mid)

    @classmethod
    def from_scores(
        cls, energies: np.ndarray | Sequence[float], n_points: int = 1001
    ) -> EnergyQuantiles:
        """Summarise ``energies`` by their quantiles at ``n_points`` evenly spaced levels."""
        if n_points < 2:
            raise DataError(f"n_points must be >= 2, got {n_points}")
        e = _reference_scores(energies, "EnergyQuantiles")
        return cls(np.quantile(e, np.linspace(0.0, 1.0, n_points)), int(e.size))

    def percentiles(self, energies: np.ndarray | Sequence[float]) -> np.ndarray:
        """Percentile in [0, 100] of each energy among the training energies.

        Piecewise-linear interpolation of the stored quantiles: monotone non-decreasing,
        0 below the smallest training energy and 100 above the largest. An energy equal to
        a repeated quantile value gets the middle of that value's level range.
        """
        e = np.asarray(energies, dtype=np.float64)
        if np.any(np.isnan(e)):
            raise DataError("cannot rank a NaN energy; the model or its input is broken")
        pct = np.interp(e, self._knot_x, self._knot_y, left=0.0, right=100.0)
        return np.clip(pct, 0.0, 100.0)

    def percentile(self, energy: float) -> float:
        """Percentile in [0, 100] of one energy among the training energies."""
        return float(self.percentiles(np.array([energy]))[0])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form: ``{"values": [...], "n_reference": n}``."""
        return {"values": [float(x) for x in self.values], "n_reference": int(self.n_reference)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnergyQuantiles:
        try:
            values = np.asarray(list(data["values"]), dtype=np.float64)
            n_reference = int(data["n_reference"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"not a valid energy-quantiles record ({exc!r}); expected keys values"
                " (list of numbers) and n_reference"
            ) from None
        return cls(values, n_reference)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EnergyQuantiles):
            return NotImplemented
        return self.n_reference == other.n_reference and np.array_equal(self.values, other.values)
