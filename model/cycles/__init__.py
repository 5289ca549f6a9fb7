"""Cycle cutting: a series -> quasi-periodic windows, one cycle each, the same offline and online.

- :mod:`~model.cycles.base`: :class:`Cycle`, the :class:`Cutter` / :class:`CycleStream`
  interface and :func:`cut` for whole arrays;
- :mod:`~model.cycles.fixed`: ``fixed`` (length, hop): today's sliding windows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model.cycles.base import Cutter, Cycle, CycleStream, cut, cycle_windows
from model.cycles.fixed import FixedCutter
from model.errors import DataError

__all__ = [
    "Cutter",
    "Cycle",
    "CycleStream",
    "FixedCutter",
    "cut",
    "cutter_from_config",
    "cycle_windows",
    "model_cutter",
]

_KINDS: dict[str, Any] = {"fixed": FixedCutter}


def cutter_from_config(config: Mapping[str, Any]) -> Cutter:
    """The cutter a model's metadata describes (``Cutter.to_config``)."""
    kind = config.get("kind") if isinstance(config, Mapping) else None
    if kind not in _KINDS:
        raise DataError(
            f"unknown cycle cutter {kind!r} in {config!r}; valid kinds: {', '.join(_KINDS)}"
        )
    cutter: Cutter = _KINDS[kind].from_config(dict(config))
    return cutter


def model_cutter(cycles: Mapping[str, Any] | None, window_length: int, hop: int | None) -> Cutter:
    """The cutter of a model: its ``cycles`` config, else fixed windows (older checkpoints and
    models trained on ready-made windows)."""
    if cycles is not None:
        return cutter_from_config(cycles)
    return FixedCutter(int(window_length), int(hop or window_length))
