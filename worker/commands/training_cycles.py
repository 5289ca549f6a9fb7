"""Training cycles of one or more series, cut by a cutter spec: the one path shared by
``seq2gmm train --train FILE.csv --cycles SPEC`` and ``seq2gmm train --from-topic``, so the
same samples give the same windows (and, with the same seed, the same model) from a file or
from the stream's history."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from model.cycles import Cutter, cut, cycle_windows
from model.evaluation.cycles import cutter_from_spec, cycle_labels
from model.evaluation.data import Series


def training_cycles(
    series: Sequence[tuple[str, Series]],
    spec: str,
    *,
    supervised: bool,
    exclude: Collection[tuple[str, float]] = (),
) -> tuple[list[np.ndarray], np.ndarray, Cutter, dict[str, Any]]:
    """(windows, 0/1 labels, the fitted cutter, a summary) of ``series`` (id, samples) cut by
    ``spec``, the cutter fitted on all of them.

    Cycles with a data-quality flag are dropped, and so are the labelled cycles (1: a labelled
    point falls inside) for one-class training; a supervised kind keeps those. ``exclude``
    holds (series id, first timestamp) of cycles to leave out as well (e.g. those a served
    model flagged). Windows come series after series, in the order given."""
    cutter = cutter_from_spec(spec, training=[(s.timestamps, s.values) for _, s in series])
    windows: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    n_cycles = flagged = labelled = excluded = 0
    excluded_set = set(exclude)
    for series_id, s in series:
        cycles = cut(cutter, s.values, s.timestamps)
        lab = cycle_labels(cycles, point_labels=s.labels)
        clean = np.array([not c.quality for c in cycles], dtype=bool)
        keep = clean if supervised else clean & (lab == 0)
        starts = [float(s.timestamps[c.start]) for c in cycles]
        dropped = np.array([(series_id, t) in excluded_set for t in starts], dtype=bool)
        n_cycles += len(cycles)
        flagged += int((~clean).sum())
        labelled += 0 if supervised else int((clean & (lab == 1)).sum())
        excluded += int((keep & dropped).sum())
        keep &= ~dropped
        windows += cycle_windows(s.values, [c for c, k in zip(cycles, keep, strict=True) if k])
        labels.append(lab[keep])
    info: dict[str, Any] = {
        "cycles": cutter.to_config(),
        "n_cycles": n_cycles,
        "dropped_flagged_cycles": flagged,
        "dropped_labelled_cycles": labelled,
    }
    if exclude:
        info["dropped_excluded_cycles"] = excluded
    all_labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    return windows, all_labels, cutter, info
