"""Cycle cutting: a series -> quasi-periodic windows, one cycle each, the same offline and online.

- :mod:`~model.cycles.base`: :class:`Cycle`, the :class:`Cutter` / :class:`CycleStream`
  interface and :func:`cut` for whole arrays;
- :mod:`~model.cycles.fixed`: ``fixed`` (length, hop): today's sliding windows;
- :mod:`~model.cycles.period`: ``period``: calendar cycles by timestamp (days, weeks);
- :mod:`~model.cycles.fiducial`: ``fiducial``: shape cycles, one per peak or trough, and
  :mod:`~model.cycles.fiducial_fit`, which fits it on training series;
- :mod:`~model.cycles.spec`: :func:`make_cutter`, a cutter from a command-line spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model.cycles.base import Cutter, Cycle, CycleStream, cut, cycle_windows
from model.cycles.fiducial import FiducialCutter
from model.cycles.fiducial_fit import fit_fiducial
from model.cycles.fixed import FixedCutter
from model.cycles.period import PeriodCutter
from model.cycles.spec import make_cutter
from model.errors import DataError

__all__ = [
    "Cutter",
    "Cycle",
    "CycleStream",
    "FiducialCutter",
    "FixedCutter",
    "PeriodCutter",
    "cut",
    "cutter_from_config",
    "cycle_windows",
    "fit_fiducial",
    "make_cutter",
    "model_cutter",
]

_KINDS: dict[str, Any] = {
    "fixed": FixedCutter,
    "period": PeriodCutter,
    "fiducial": FiducialCutter,
}


def cutter_from_config(config: Mapping[str, Any]) -> Cutter:
    """The cutter a model's metadata describes (``Cutter.to_config``)."""
    kind = config.get("kind") if isinstance(config, Mapping) else None
    if kind not in _KINDS:
        raise DataError(
            f"unknown cycle cutter {kind!r} in {config!r}; valid kinds: {', '.join(_KINDS)}"
        )
    try:
        cutter: Cutter = _KINDS[kind].from_config(dict(config))
    except (TypeError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(
            f"bad {kind!r} cutter config {dict(config)!r} ({exc}): numbers where numbers go"
        ) from exc
    return cutter


def model_cutter(cycles: Mapping[str, Any] | None, window_length: int, hop: int | None) -> Cutter:
    """The cutter of a model: its ``cycles`` config, else fixed windows (older checkpoints and
    models trained on ready-made windows)."""
    if cycles is not None:
        return cutter_from_config(cycles)
    return FixedCutter(int(window_length), int(hop or window_length))
