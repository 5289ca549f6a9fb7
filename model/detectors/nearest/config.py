"""The nearest-cycle detector's settings: :class:`NearestConfig` (kind ``knn``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from model.detectors.nearest.cycles import METRICS
from model.fitting import (
    build_config,
    check_config,
    check_field_types,
    config_items,
    training_checks,
)

_WHERE = "knn config"


@dataclass(frozen=True)
class NearestConfig:
    """Settings of :class:`~model.detectors.nearest.detector.NearestCycleDetector`."""

    metric: str = "euclidean"  # one of METRICS: "euclidean", "dtw" (banded) or "sbd" (k-Shape)
    max_points: int = 256  # cycles are resampled to the median training length, at most this
    max_references: int = 4096  # a seeded sample of the training cycles is kept beyond this
    band: float = 0.1  # dtw: Sakoe-Chiba half-width as a fraction of the points (>= 1 sample)
    candidates: int = 16  # dtw: references with the smallest LB_Keogh bound searched exactly
    threshold_fpr: float | None = 0.01  # fit() ends with infer_threshold(fpr=...) if set

    def __post_init__(self) -> None:
        check_field_types(self, _WHERE, optional=("threshold_fpr",))
        checks: list[tuple[bool, str]] = [
            (self.metric in METRICS, f"metric must be one of {METRICS}, got {self.metric!r}"),
            (self.max_points >= 2, "max_points must be >= 2 (samples per stored cycle)"),
            (
                self.max_references >= 2,
                "max_references must be >= 2 (leave-one-out distances need two references)",
            ),
            (0.0 <= self.band <= 1.0, "band must be in [0, 1] (a fraction of the cycle)"),
            (self.candidates >= 1, "candidates must be >= 1"),
            *training_checks(0.0, None, self.threshold_fpr),
        ]
        check_config(_WHERE, checks)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NearestConfig:
        return build_config(cls, config_items(cls, data, _WHERE), _WHERE)
