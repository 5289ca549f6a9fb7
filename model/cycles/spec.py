"""A cutter from its command-line spec and training series (``seq2gmm train --cycles``).

Specs: ``fixed:LEN[:HOP]``, ``period:SECONDS[:OFFSET[:TZ]]`` (e.g. ``period:86400``,
``period:604800:0:Europe/Paris``, ``period:86400:0:+02:00``; the sampling interval is fitted on
the training timestamps), ``fiducial`` (period, polarity and threshold fitted on the training
values, see :mod:`model.cycles.fiducial_fit`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model.cycles.base import Cutter
from model.cycles.fiducial_fit import fit_fiducial
from model.cycles.fixed import FixedCutter
from model.cycles.period import PeriodCutter, fit_interval
from model.errors import DataError

SPECS = "'fixed:LEN[:HOP]', 'period:SECONDS[:OFFSET[:TZ]]' or 'fiducial'"


def make_cutter(spec: str, training: Sequence[tuple[np.ndarray | None, np.ndarray]] = ()) -> Cutter:
    """The cutter ``spec`` names, fitted on ``training`` ``(timestamps, values)`` series."""
    kind, _, rest = spec.partition(":")
    try:
        if kind == "fixed":
            length, _, hop = rest.partition(":")
            return FixedCutter(int(length), int(hop or length))
        if kind == "period":
            seconds, _, more = rest.partition(":")
            offset, _, tz = more.partition(":")
            stamps = [t for t, _ in training if t is not None]
            return PeriodCutter(
                period=float(seconds),
                interval=fit_interval(stamps),
                offset=float(offset or 0.0),
                tz=tz or "UTC",
            )
        if kind == "fiducial" and not rest:
            if not training:
                raise DataError("fiducial cycles are fitted: pass training series")
            return fit_fiducial([v for _, v in training])
    except ValueError as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"bad cycles spec {spec!r} ({exc}); write {SPECS}") from exc
    raise DataError(f"unknown cycles spec {spec!r}; write {SPECS}")
