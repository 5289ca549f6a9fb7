"""The cycle-cutting interface: a series -> its quasi-periodic windows (one cycle each).

A :class:`Cutter` is the fitted, serialisable description of how a model's series are cut
(it travels in the model's checkpoint metadata as :meth:`Cutter.to_config`). Each series gets
its own :class:`CycleStream` (``cutter.stream()``): samples are pushed in timestamp order, in
messages of any size, and the stream returns each cycle once it is complete. Offline arrays
use the same stream (:func:`cut`), so a series is cut into the same cycles offline and online
whatever the message boundaries: every stream must give the same cycles for any split of the
same samples into pushes (tests check this for every cutter).

Sample indices count the samples pushed into one stream, from 0. A cycle is the half-open
range ``[start, end)`` of those indices plus data-quality flags (e.g. a cycle whose length is
out of the cutter's bounds: a missed or spurious fiducial point); flagged cycles are still
returned, never silently merged or dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from model.errors import DataError


@dataclass(frozen=True)
class Cycle:
    """One cycle of a series: samples ``[start, end)`` of its stream, and quality flags."""

    start: int
    end: int
    quality: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.end - self.start


class CycleStream(Protocol):
    """The incremental cutter of one series (bounded state)."""

    def push(self, timestamps: np.ndarray, values: np.ndarray) -> list[Cycle]:
        """Append (n,) float64 timestamps (seconds, increasing) and (n, F) float64 values;
        return the cycles these samples completed, in order."""
        ...

    @property
    def keep_from(self) -> int:
        """Index of the first sample that a cycle not yet returned may still contain: the
        caller may drop every earlier sample (and commit past its source offset)."""
        ...


class Cutter(Protocol):
    """How a model's series are cut into cycles (fitted, immutable, serialisable)."""

    #: the cutter's name in configs and on the command line: "fixed", "period", "fiducial"
    kind: str

    def stream(self) -> CycleStream:
        """A new incremental cutter for one series."""
        ...

    def to_config(self) -> dict[str, Any]:
        """JSON-safe settings, ``{"kind": ..., ...}``; :func:`model.cycles.cutter_from_config`
        rebuilds an equal cutter from them."""
        ...

    @property
    def max_length(self) -> int:
        """The most samples a cycle can hold (bounds each series' buffer)."""
        ...


def as_series(timestamps: np.ndarray | None, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as (T, F) float64 and its (T,) timestamps (0, 1, 2, ... when None)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise DataError(f"a series must be of shape (T,) or (T, F), got {x.shape}")
    t = np.arange(len(x), dtype=np.float64) if timestamps is None else np.asarray(timestamps)
    t = t.astype(np.float64, copy=False).reshape(-1)
    if t.shape[0] != x.shape[0]:
        raise DataError(f"{t.shape[0]} timestamps for {x.shape[0]} samples")
    if t.size > 1 and not np.all(np.diff(t) > 0):
        raise DataError("timestamps must be strictly increasing; sort and de-duplicate first")
    return t, x


def cut(cutter: Cutter, values: np.ndarray, timestamps: np.ndarray | None = None) -> list[Cycle]:
    """Every complete cycle of one whole series (offline), exactly as a stream would cut it."""
    t, x = as_series(timestamps, values)
    return cutter.stream().push(t, x)


def cycle_windows(values: np.ndarray, cycles: list[Cycle]) -> list[np.ndarray]:
    """The (L_i, F) windows of ``cycles`` in a (T, F) or (T,) series."""
    return [np.asarray(values)[c.start : c.end] for c in cycles]


def check_config(config: Mapping[str, Any], kind: str, keys: set[str]) -> dict[str, Any]:
    """``config`` of a ``kind`` cutter with exactly ``keys`` (besides "kind"), else a DataError."""
    data = dict(config)
    if data.pop("kind", kind) != kind:
        raise DataError(f"not a {kind!r} cutter config: {dict(config)}")
    if set(data) != keys:
        raise DataError(
            f"a {kind!r} cutter config needs the keys {sorted(keys)}, got {sorted(data)}"
        )
    return data
